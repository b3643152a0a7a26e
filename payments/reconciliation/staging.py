"""Streaming a statement into a per-connection staging table, in batches, with its SHA-256 digest.

The table is TEMPORARY: it lives in the importing transaction's connection only (PostgreSQL drops it at commit;
SQLite's is dropped by `drop`), so concurrent imports never see each other's lines and nothing is left behind.
PostgreSQL is fed with COPY (psycopg), SQLite with executemany; either way at most one batch is held in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import BigInteger, Column, MetaData, Table, Text
from sqlalchemy.orm import Session

from payments.channels.base import LineKind, StatementError, StatementLine

BATCH = 5000
MAX_REF = 64  # the items table's reference columns

_metadata = MetaData()  # not the service's metadata: no migration creates this table
stage = Table(
    "recon_stage",
    _metadata,
    Column("line_no", BigInteger, nullable=False),
    Column("kind", Text, nullable=False),
    Column("order_no", Text, nullable=False),
    Column("trade_no", Text, nullable=False),
    Column("refund_no", Text),
    Column("channel_refund_no", Text),
    Column("amount_fen", BigInteger, nullable=False),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)
_INDEXES = (
    "CREATE INDEX recon_stage_order_no ON recon_stage (order_no, kind)",
    "CREATE INDEX recon_stage_refund_no ON recon_stage (refund_no)",
)
_COPY = "COPY recon_stage (line_no, kind, order_no, trade_no, refund_no, channel_refund_no, amount_fen) FROM STDIN"
_INSERT = (
    "INSERT INTO recon_stage (line_no, kind, order_no, trade_no, refund_no, channel_refund_no, amount_fen) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


@dataclass
class Digest:
    """SHA-256 over the raw lines as they stream past (the same bytes the parser reads)."""

    sha256: hashlib._Hash = field(default_factory=hashlib.sha256)

    def feed(self, lines: Iterable[bytes]) -> Iterator[bytes]:
        for line in lines:
            self.sha256.update(line)
            yield line

    def hexdigest(self) -> str:
        return self.sha256.hexdigest()


def file_digest(lines: Iterable[bytes]) -> str:
    digest = Digest()
    for _ in digest.feed(lines):
        pass
    return digest.hexdigest()


def create(db: Session) -> None:
    drop(db)  # SQLite keeps a temporary table for the connection's life, and pooled connections live on
    stage.create(db.connection())


def index(db: Session) -> None:
    """Indexes after the load: one sort instead of a million index insertions."""
    for statement in _INDEXES:
        db.connection().exec_driver_sql(statement)
    if db.get_bind().dialect.name == "postgresql":
        db.connection().exec_driver_sql("ANALYZE recon_stage")


def drop(db: Session) -> None:
    db.connection().exec_driver_sql("DROP TABLE IF EXISTS recon_stage")


def _row(line: StatementLine) -> tuple[object, ...]:
    """The staging row of a line, after the checks a parser's output must pass anyway (a bad line refuses the file)."""
    if not isinstance(line, StatementLine):
        raise StatementError(0, "the parser yielded something other than a StatementLine")
    no = line.line_no
    if type(line.amount_fen) is not int or line.amount_fen <= 0:
        raise StatementError(no, "the amount must be a positive number of fen")
    refs = [line.order_no, line.channel_trade_no]
    if line.kind is LineKind.REFUND:
        if not line.refund_no:
            raise StatementError(no, "a refund line needs the refund number")
        refs.append(line.refund_no)
        if line.channel_refund_no is not None:
            refs.append(line.channel_refund_no)
    elif line.kind is not LineKind.PAYMENT:
        raise StatementError(no, "unknown line kind")
    for ref in refs:
        if not isinstance(ref, str) or not 0 < len(ref) <= MAX_REF or not ref.isprintable():
            raise StatementError(no, f"a reference must be 1 to {MAX_REF} printable characters")
    return (
        no,
        str(line.kind),
        line.order_no,
        line.channel_trade_no,
        line.refund_no if line.kind is LineKind.REFUND else None,
        line.channel_refund_no if line.kind is LineKind.REFUND else None,
        line.amount_fen,
    )


def _batches(lines: Iterable[StatementLine], size: int) -> Iterator[list[tuple[object, ...]]]:
    batch: list[tuple[object, ...]] = []
    for line in lines:
        batch.append(_row(line))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def load(db: Session, lines: Iterable[StatementLine], *, batch: int = BATCH) -> int:
    """Stage every line; returns how many. A StatementError from the parser or the checks propagates (the caller's
    transaction rolls back: nothing of the file is kept)."""
    connection = db.connection()
    count = 0
    if connection.dialect.name == "postgresql":
        raw = connection.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(_COPY) as copy:
            for rows in _batches(lines, batch):
                for row in rows:
                    copy.write_row(row)
                count += len(rows)
        return count
    for rows in _batches(lines, batch):
        connection.exec_driver_sql(_INSERT, rows)  # a list of tuples: executemany
        count += len(rows)
    return count
