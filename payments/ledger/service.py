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

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from authsvc.database import lock
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


def post(db: Session, key: str, kind: str, lines: Sequence[Line], *, order_ref: str | None = None) -> LedgerEntry:
    """The entry for `key`: posted now with `lines`, or the one posted before with the same lines."""
    _validate(key, kind, lines, order_ref)
    digest = _digest(kind, order_ref, lines)
    # Serialise posters of one key (PostgreSQL advisory lock until commit): the second waits for the first to commit,
    # then finds its entry instead of failing on the unique index halfway through its own unit of work.
    lock(db, f"ledger-entry:{key}")
    existing = db.scalar(select(LedgerEntry).where(LedgerEntry.key == key))
    if existing is not None:
        if existing.digest != digest:
            raise KeyReused(f"ledger key {key!r} was posted with other lines")
        return existing
    entry = LedgerEntry(key=key, kind=kind, order_ref=order_ref, digest=digest)
    db.add(entry)
    # Accounts in a fixed order: two entries opening the same new accounts take their locks in the same order.
    accounts = {code: _account(db, code) for code in sorted({line.account for line in lines})}
    for line in lines:
        entry.postings.append(LedgerPosting(account=accounts[line.account], side=line.side, amount=line.amount))
    db.flush()
    return entry


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


def _account(db: Session, code: str) -> LedgerAccount:
    account = db.scalar(select(LedgerAccount).where(LedgerAccount.code == code))
    if account is None:
        # Accounts open on first use; the lock keeps two first posters of one account from both inserting it.
        lock(db, f"ledger-account:{code}")
        account = db.scalar(select(LedgerAccount).where(LedgerAccount.code == code))
        if account is None:
            account = LedgerAccount(code=code, normal_side=normal_side(code))
            db.add(account)
            db.flush()
    return account
