"""The ledger's self-check (`authsvc payments check-ledger`): debits equal credits overall and in every entry,
and no entry is without postings. Summed by the database, so it runs on a ledger of any size."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from payments.ledger.models import LedgerEntry, LedgerPosting

# How many offending entries a report names; the count is always exact.
SHOWN = 20


@dataclass
class LedgerReport:
    entries: int = 0
    postings: int = 0
    total_debits: int = 0
    total_credits: int = 0
    unbalanced_entries: int = 0
    empty_entries: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.total_debits == self.total_credits and not self.unbalanced_entries and not self.empty_entries

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "postings": self.postings,
            "total_debits_fen": self.total_debits,
            "total_credits_fen": self.total_credits,
            "unbalanced_entries": self.unbalanced_entries,
            "empty_entries": self.empty_entries,
            "examples": self.examples,
        }


def check(db: Session) -> LedgerReport:
    debits = func.coalesce(func.sum(case((LedgerPosting.side == "debit", LedgerPosting.amount), else_=0)), 0)
    credits = func.coalesce(func.sum(case((LedgerPosting.side == "credit", LedgerPosting.amount), else_=0)), 0)
    report = LedgerReport()
    postings, total_debits, total_credits = db.execute(select(func.count(LedgerPosting.id), debits, credits)).one()
    report.postings, report.total_debits, report.total_credits = int(postings), int(total_debits), int(total_credits)
    report.entries = int(db.scalar(select(func.count(LedgerEntry.id))) or 0)

    per_entry = select(LedgerPosting.entry_id).group_by(LedgerPosting.entry_id).having(debits != credits)
    report.unbalanced_entries = int(db.scalar(select(func.count()).select_from(per_entry.subquery())) or 0)
    for key in db.scalars(select(LedgerEntry.key).where(LedgerEntry.id.in_(per_entry)).limit(SHOWN)):
        report.examples.append(f"unbalanced: {key}")

    has_postings = select(LedgerPosting.id).where(LedgerPosting.entry_id == LedgerEntry.id).exists()
    empty = select(LedgerEntry.key).where(~has_postings)
    report.empty_entries = int(db.scalar(select(func.count()).select_from(empty.subquery())) or 0)
    for key in db.scalars(empty.limit(SHOWN)):
        report.examples.append(f"no postings: {key}")
    return report
