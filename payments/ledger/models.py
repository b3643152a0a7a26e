"""Ledger tables: accounts, journal entries (one per business event) and their postings.

Entries and postings are append-only: the code has no path that updates or deletes them, and on PostgreSQL a
trigger (migration 0006) refuses UPDATE and DELETE outright. A mistake is corrected by a new, reversing entry.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from authsvc.database import Base, UTCDateTime, utcnow

ID = BigInteger().with_variant(Integer, "sqlite")

# The tables the PostgreSQL trigger protects; the test fixture empties them with TRUNCATE, which row triggers
# do not see.
IMMUTABLE_TABLES = ("ledger_postings", "ledger_entries")


class LedgerAccount(Base):
    __tablename__ = "ledger_accounts"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    normal_side: Mapped[str] = mapped_column(String(6))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    # The business event's key ("order:<no>:paid"): unique, so one event can never post twice.
    key: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    order_ref: Mapped[str | None] = mapped_column(String(64), index=True)
    # SHA-256 of the kind, order reference and lines: a key reused for different lines is told apart from a retry.
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    postings: Mapped[list[LedgerPosting]] = relationship(back_populates="entry", order_by="LedgerPosting.id")


class LedgerPosting(Base):
    __tablename__ = "ledger_postings"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("side IN ('debit', 'credit')", name="side_known"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), index=True)
    side: Mapped[str] = mapped_column(String(6))
    amount: Mapped[int] = mapped_column(BigInteger)

    entry: Mapped[LedgerEntry] = relationship(back_populates="postings")
    account: Mapped[LedgerAccount] = relationship(lazy="joined")
