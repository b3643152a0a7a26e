"""Posting to the ledger and reading balances, in the caller's unit of work (flush only, never commit).

`post` is the only way in. It is idempotent on the business key: the same event posted again (a retried callback,
a crash and a retry) returns the entry already there; the same key with other lines is an error, because it means
two different events were given one name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from authsvc.database import lock, utcnow
from payments.ledger.accounts import AccountError, Side, normal_side
from payments.ledger.models import LedgerAccount, LedgerEntry, LedgerPosting
from payments.money import MoneyError, check_fen

MAX_KEY = 128
MAX_KIND = 32


class LedgerError(ValueError):
    """A posting refused before anything was written."""


class KeyReused(LedgerError):
    """The business key names an entry with other lines: a different event under the same name."""


@dataclass(frozen=True)
class Line:
    account: str
    side: Side
    amount: int


def debit(account: str, amount: int) -> Line:
    return Line(account, Side.DEBIT, amount)


def credit(account: str, amount: int) -> Line:
    return Line(account, Side.CREDIT, amount)


@dataclass(frozen=True)
class Posted:
    entry_id: int
    new: bool  # False: the entry was there already (the same event posted again)

    @property
    def id(self) -> int:
        return self.entry_id


def post(db: Session, key: str, kind: str, lines: Sequence[Line], *, order_ref: str | None = None) -> Posted:
    """The entry for `key`: posted now with `lines`, or the one posted before with the same lines.

    Three statements on the hot path (callbacks post one entry each): the entry inserted unless its key exists,
    the accounts' ids, the postings. A concurrent poster of the same key waits on the unique index until the
    first commits, then inserts nothing and finds the first's entry."""
    _validate(key, kind, lines, order_ref)
    digest = _digest(kind, order_ref, lines)
    inserted = db.execute(
        _insert(db, LedgerEntry)
        .values(key=key, kind=kind, order_ref=order_ref, digest=digest, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(LedgerEntry.id)
    ).scalar()
    if inserted is None:
        existing = db.execute(select(LedgerEntry.id, LedgerEntry.digest).where(LedgerEntry.key == key)).one()
        if existing.digest != digest:
            raise KeyReused(f"ledger key {key!r} was posted with other lines")
        return Posted(existing.id, new=False)
    accounts = _accounts(db, {line.account for line in lines})
    db.execute(
        insert(LedgerPosting),
        [
            {"entry_id": inserted, "account_id": accounts[line.account], "side": line.side, "amount": line.amount}
            for line in lines
        ],
    )
    return Posted(inserted, new=True)


def _insert(db: Session, table: type[LedgerEntry]) -> Any:
    # INSERT ... ON CONFLICT DO NOTHING is spelt the same on both databases, but built by each dialect's own insert.
    dialect = db.get_bind().dialect.name
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table)


def entry_by_key(db: Session, key: str) -> LedgerEntry | None:
    return db.scalar(select(LedgerEntry).where(LedgerEntry.key == key))


def balance(db: Session, code: str) -> int:
    """The account's balance in fen on its normal side (0 for an account never posted to)."""
    return balances(db, [code]).get(code, 0)


def balances(db: Session, codes: Sequence[str] | None = None) -> dict[str, int]:
    """Balances in fen on each account's normal side, summed by the database."""
    signed = case((LedgerPosting.side == LedgerAccount.normal_side, LedgerPosting.amount), else_=-LedgerPosting.amount)
    query = (
        select(LedgerAccount.code, func.coalesce(func.sum(signed), 0))
        .join(LedgerPosting, LedgerPosting.account_id == LedgerAccount.id)
        .group_by(LedgerAccount.code)
    )
    if codes is not None:
        query = query.where(LedgerAccount.code.in_(list(codes)))
    return {code: int(total) for code, total in db.execute(query)}


def _validate(key: str, kind: str, lines: Sequence[Line], order_ref: str | None) -> None:
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY or not key.isprintable():
        raise LedgerError(f"a ledger key is 1 to {MAX_KEY} printable characters")
    if not isinstance(kind, str) or not 0 < len(kind) <= MAX_KIND:
        raise LedgerError(f"an entry kind is 1 to {MAX_KIND} characters")
    if order_ref is not None and not 0 < len(order_ref) <= 64:
        raise LedgerError("an order reference is 1 to 64 characters")
    if not lines:
        raise LedgerError("an entry needs postings")
    totals = {Side.DEBIT: 0, Side.CREDIT: 0}
    for line in lines:
        if not isinstance(line, Line) or not isinstance(line.side, Side):
            raise LedgerError("postings are Line values with a Side")
        try:
            normal_side(line.account)
            check_fen(line.amount)
        except (AccountError, MoneyError) as exc:
            raise LedgerError(f"posting to {line.account!r}: {exc}") from None
        totals[line.side] += line.amount
    if totals[Side.DEBIT] != totals[Side.CREDIT]:
        raise LedgerError(f"unbalanced entry: debits {totals[Side.DEBIT]} fen, credits {totals[Side.CREDIT]} fen")


def _digest(kind: str, order_ref: str | None, lines: Sequence[Line]) -> str:
    # Order-insensitive: the same lines listed in another order are the same event.
    canonical = sorted((line.account, str(line.side), line.amount) for line in lines)
    return hashlib.sha256(json.dumps([kind, order_ref, canonical]).encode()).hexdigest()


def _accounts(db: Session, codes: set[str]) -> dict[str, int]:
    """Account ids by code, opening the missing ones (accounts open on first use)."""
    found = dict(db.execute(select(LedgerAccount.code, LedgerAccount.id).where(LedgerAccount.code.in_(codes))).all())
    # In a fixed order: two entries opening the same new accounts take their locks in the same order.
    for code in sorted(codes - found.keys()):
        # The lock keeps two first posters of one account from both inserting it.
        lock(db, f"ledger-account:{code}")
        account_id = db.scalar(select(LedgerAccount.id).where(LedgerAccount.code == code))
        if account_id is None:
            account = LedgerAccount(code=code, normal_side=normal_side(code))
            db.add(account)
            db.flush()
            account_id = account.id
        found[code] = account_id
    return found
