"""Exporting a batch: every order with channel "withholding" still `created` goes into one debit file, is submitted
(`pending`) and recorded as a line of the batch, all in the caller's unit of work. Write the file only after that
commits: a file the database does not know could be debited with nothing to apply its results to, while a batch
whose file was lost is written again from its lines (`debit_file`).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from payments.channels import bank
from payments.orders import accounting
from payments.orders.models import PaymentOrder
from payments.orders.states import State
from payments.withholding import files
from payments.withholding.agreements import active_agreement
from payments.withholding.models import WithholdingBatch, WithholdingLine

CHANNEL = "withholding"
MAX_BATCH = 100_000


@dataclass(frozen=True)
class Exported:
    batch_no: str | None  # None when there was nothing to debit
    data: bytes = b""
    signature: bytes = b""
    count: int = 0
    total_fen: int = 0
    failed_no_agreement: list[str] = field(default_factory=list)

    def report(self) -> dict[str, object]:
        return {
            "batch_no": self.batch_no,
            "count": self.count,
            "total_fen": self.total_fen,
            "failed_no_agreement": self.failed_no_agreement,
        }


def new_batch_no(now: datetime) -> str:
    return f"WH{now:%Y%m%d}{secrets.token_hex(6).upper()}"


def export(db: Session, *, merchant: str, key: bank.SigningKey, now: datetime, limit: int = MAX_BATCH) -> Exported:
    """Pack the waiting withholding orders into one batch. An order whose payer has no active agreement any more
    (revoked since it was created) is failed: it could never be debited."""
    orders = db.scalars(
        select(PaymentOrder)
        .where(PaymentOrder.channel == CHANNEL, PaymentOrder.state == State.CREATED)
        .order_by(PaymentOrder.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    lines: list[files.DebitLine] = []
    failed: list[str] = []
    for order in orders:
        agreement = active_agreement(db, order.payer_kind, order.payer, order.insured_ssn)
        if agreement is None:
            if accounting.fail(db, order.order_no).changed:
                failed.append(order.order_no)
            continue
        if not accounting.submit(db, order.order_no).changed:
            continue  # closed meanwhile (the row lock serialised us behind the closer)
        lines.append(files.DebitLine(len(lines) + 1, order.order_no, agreement.agreement_no, order.amount_fen))
    if not lines:
        return Exported(None, failed_no_agreement=failed)
    debit = files.DebitFile(merchant, new_batch_no(now), now.replace(microsecond=0), tuple(lines))
    data = files.write_debit(debit)
    batch = WithholdingBatch(
        batch_no=debit.batch_no,
        created_at=debit.created_at,
        line_count=len(lines),
        total_fen=debit.total_fen,
        file_sha256=hashlib.sha256(data).hexdigest(),
        status="exported",
    )
    db.add(batch)
    db.flush()
    db.add_all(
        WithholdingLine(
            batch_id=batch.id,
            seq=line.seq,
            order_no=line.order_no,
            agreement_no=line.agreement_no,
            amount_fen=line.amount_fen,
        )
        for line in lines
    )
    db.flush()
    signature = bank.sign_file(key, files.DEBIT, data)
    return Exported(debit.batch_no, data, signature, len(lines), debit.total_fen, failed)


def batch_by_no(db: Session, batch_no: str, *, for_update: bool = False) -> WithholdingBatch | None:
    query = select(WithholdingBatch).where(WithholdingBatch.batch_no == batch_no)
    return db.scalars(query.with_for_update() if for_update else query).one_or_none()


def batch_lines(db: Session, batch: WithholdingBatch) -> list[WithholdingLine]:
    return list(
        db.scalars(select(WithholdingLine).where(WithholdingLine.batch_id == batch.id).order_by(WithholdingLine.seq))
    )


def line_of_order(db: Session, order_no: str) -> WithholdingLine | None:
    return db.scalars(select(WithholdingLine).where(WithholdingLine.order_no == order_no)).one_or_none()


def debit_file(db: Session, batch_no: str, *, merchant: str, key: bank.SigningKey) -> tuple[bytes, bytes]:
    """The batch's debit file again, byte for byte (its hash is checked), with a fresh signature."""
    batch = batch_by_no(db, batch_no)
    if batch is None:
        raise LookupError(f"no batch {batch_no!r}")
    lines = tuple(
        files.DebitLine(line.seq, line.order_no, line.agreement_no, line.amount_fen) for line in batch_lines(db, batch)
    )
    data = files.write_debit(files.DebitFile(merchant, batch.batch_no, batch.created_at, lines))
    if hashlib.sha256(data).hexdigest() != batch.file_sha256:
        raise LookupError(f"batch {batch_no}: the rebuilt file differs from the one exported (merchant id changed?)")
    return data, bank.sign_file(key, files.DEBIT, data)
