"""The ledger's self-check (`authsvc payments check-ledger`): debits equal credits overall and in every entry, no
entry is without postings, and the orders agree with the ledger. Summed by the database, so it runs on a ledger of
any size, and on PostgreSQL read in one snapshot, so that an order paid while it runs is not a false alarm.

Orders and the ledger agree when (ORDER_RULES):
* every paid, partially refunded or refunded order has its `order:<no>:paid` entry, debiting `clearing:<channel>`
  and crediting `fund:<type>:<region>` with exactly the order's amount, and nothing else;
* no created, pending, failed or closed order has one, and no such entry exists without its order;
* `refunded_fen` equals its `refund_succeeded` entries and its succeeded refunds;
* `refund_reserved_fen` equals its `refund_requested` entries less the released ones (`refund_failed`,
  `refund_rejected`), and its refunds awaiting approval, requested or succeeded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import and_, case, func, literal, or_, select
from sqlalchemy.orm import Session

from payments.ledger.models import LedgerAccount, LedgerEntry, LedgerPosting
from payments.orders.models import PaymentOrder, PaymentRefund
from payments.orders.states import PAID_STATES

# How many offending entries a report names; the count is always exact.
SHOWN = 20

ORDER_RULES = {
    "paid_without_entry": "is {state} without its paid entry",
    "paid_entry_mismatch": "has a paid entry that is not its amount from clearing to its fund",
    "unpaid_with_paid_entry": "is {state} but has a paid entry",
    "paid_entry_without_order": "has a paid entry but no order",
    "refunded_mismatch": "has refunded_fen {refunded} but {detail}",
    "reserved_mismatch": "has refund_reserved_fen {reserved} but {detail}",
}
# Refund states whose amount is reserved against the order (payments/orders/accounting.py).
RESERVING_REFUNDS = ("awaiting_approval", "requested", "succeeded")
RELEASED_KINDS = ("refund_failed", "refund_rejected")


@dataclass
class LedgerReport:
    entries: int = 0
    postings: int = 0
    total_debits: int = 0
    total_credits: int = 0
    unbalanced_entries: int = 0
    empty_entries: int = 0
    orders: int = 0
    order_disagreements: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ORDER_RULES, 0))
    examples: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        """The ledger on its own: debits equal credits, overall and in every entry, and no entry is empty."""
        return self.total_debits == self.total_credits and not self.unbalanced_entries and not self.empty_entries

    @property
    def ok(self) -> bool:
        return self.balanced and not any(self.order_disagreements.values())

    def disagree(self, rule: str, order_no: str, **detail: object) -> None:
        self.order_disagreements[rule] += 1
        if sum(self.order_disagreements.values()) <= SHOWN:  # order numbers only, never the insured person
            self.examples.append(f"order {order_no} " + ORDER_RULES[rule].format(**detail))

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "balanced": self.balanced,
            "entries": self.entries,
            "postings": self.postings,
            "total_debits_fen": self.total_debits,
            "total_credits_fen": self.total_credits,
            "unbalanced_entries": self.unbalanced_entries,
            "empty_entries": self.empty_entries,
            "orders": self.orders,
            "order_disagreements": dict(self.order_disagreements),
            "examples": self.examples,
        }


def check(db: Session) -> LedgerReport:
    if db.get_bind().dialect.name == "postgresql" and not db.in_transaction():
        # Every query below sees the same snapshot: an order paid meanwhile is seen with its entry or not at all.
        db.connection(execution_options={"isolation_level": "REPEATABLE READ"})
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
    _check_orders(db, report)
    return report


def _paid_key(order_no: object) -> object:
    return literal("order:") + order_no + literal(":paid")


def _check_orders(db: Session, report: LedgerReport) -> None:
    report.orders = int(db.scalar(select(func.count(PaymentOrder.id))) or 0)
    _check_paid_entries(db, report)
    _check_refunds(db, report)


def _check_paid_entries(db: Session, report: LedgerReport) -> None:
    clearing = literal("clearing:") + PaymentOrder.channel
    fund = literal("fund:") + PaymentOrder.insurance_type + literal(":") + PaymentOrder.region
    is_debit, is_credit = LedgerPosting.side == "debit", LedgerPosting.side == "credit"
    to_clearing = func.coalesce(
        func.sum(case((and_(is_debit, LedgerAccount.code == clearing), LedgerPosting.amount))), 0
    )
    to_fund = func.coalesce(func.sum(case((and_(is_credit, LedgerAccount.code == fund), LedgerPosting.amount))), 0)
    total = func.coalesce(func.sum(LedgerPosting.amount), 0)
    entries = func.count(func.distinct(LedgerEntry.id))
    paid = PaymentOrder.state.in_([s.value for s in PAID_STATES])
    exact = and_(
        to_clearing == PaymentOrder.amount_fen, to_fund == PaymentOrder.amount_fen, total == 2 * PaymentOrder.amount_fen
    )
    query = (
        select(PaymentOrder.order_no, PaymentOrder.state, entries)
        .select_from(PaymentOrder)
        .outerjoin(LedgerEntry, LedgerEntry.key == _paid_key(PaymentOrder.order_no))
        .outerjoin(LedgerPosting, LedgerPosting.entry_id == LedgerEntry.id)
        .outerjoin(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
        .group_by(PaymentOrder.id, PaymentOrder.order_no, PaymentOrder.state, PaymentOrder.amount_fen)
        .having(or_(and_(paid, or_(entries == 0, ~exact)), and_(~paid, entries > 0)))
        .order_by(PaymentOrder.id)
    )
    for order_no, state, count in db.execute(query):
        if state not in PAID_STATES:
            report.disagree("unpaid_with_paid_entry", order_no, state=state)
        elif not count:
            report.disagree("paid_without_entry", order_no, state=state)
        else:
            report.disagree("paid_entry_mismatch", order_no)
    # By the entry's order reference (mark_paid posts `order:<no>:paid` with order_ref <no>): an index lookup per
    # entry, where matching the key against every order's number would be a scan per entry on SQLite.
    has_order = select(PaymentOrder.id).where(PaymentOrder.order_no == LedgerEntry.order_ref).exists()
    orphans = select(LedgerEntry.order_ref, LedgerEntry.key).where(
        LedgerEntry.kind == "paid", LedgerEntry.key.like("order:%:paid"), ~has_order
    )
    for order_ref, key in db.execute(orphans.order_by(LedgerEntry.id)):
        report.disagree("paid_entry_without_order", order_ref or key.split(":")[1])


def _check_refunds(db: Session, report: LedgerReport) -> None:
    def total_of(condition: object) -> object:
        return func.coalesce(func.sum(case((condition, LedgerPosting.amount), else_=0)), 0)

    # Each refund entry has one debit of the refund's amount: its debits are its amount.
    ledger = (
        select(
            LedgerEntry.order_ref.label("order_no"),
            total_of(LedgerEntry.kind == "refund_requested").label("requested"),
            total_of(LedgerEntry.kind == "refund_succeeded").label("succeeded"),
            total_of(LedgerEntry.kind.in_(RELEASED_KINDS)).label("released"),
        )
        .join(LedgerPosting, LedgerPosting.entry_id == LedgerEntry.id)
        .where(LedgerPosting.side == "debit", LedgerEntry.kind.like("refund_%"))
        .group_by(LedgerEntry.order_ref)
        .subquery()
    )

    def rows_of(condition: object) -> object:
        return func.coalesce(func.sum(case((condition, PaymentRefund.amount_fen), else_=0)), 0)

    rows = (
        select(
            PaymentRefund.order_id,
            rows_of(PaymentRefund.state.in_(RESERVING_REFUNDS)).label("reserving"),
            rows_of(PaymentRefund.state == "succeeded").label("succeeded"),
        )
        .group_by(PaymentRefund.order_id)
        .subquery()
    )
    entry_succeeded = func.coalesce(ledger.c.succeeded, 0)
    entry_reserved = func.coalesce(ledger.c.requested, 0) - func.coalesce(ledger.c.released, 0)
    row_succeeded, row_reserving = func.coalesce(rows.c.succeeded, 0), func.coalesce(rows.c.reserving, 0)
    query = (
        select(
            PaymentOrder.order_no,
            PaymentOrder.refunded_fen,
            PaymentOrder.refund_reserved_fen,
            entry_succeeded,
            entry_reserved,
            row_succeeded,
            row_reserving,
        )
        .outerjoin(ledger, ledger.c.order_no == PaymentOrder.order_no)
        .outerjoin(rows, rows.c.order_id == PaymentOrder.id)
        .where(
            or_(
                PaymentOrder.refunded_fen != entry_succeeded,
                PaymentOrder.refunded_fen != row_succeeded,
                PaymentOrder.refund_reserved_fen != entry_reserved,
                PaymentOrder.refund_reserved_fen != row_reserving,
            )
        )
        .order_by(PaymentOrder.id)
    )
    for order_no, refunded, reserved, e_succeeded, e_reserved, r_succeeded, r_reserving in db.execute(query):
        if refunded != e_succeeded or refunded != r_succeeded:
            detail = f"{e_succeeded} in refund_succeeded entries and {r_succeeded} in succeeded refunds"
            report.disagree("refunded_mismatch", order_no, refunded=refunded, detail=detail)
        if reserved != e_reserved or reserved != r_reserving:
            detail = f"{e_reserved} reserved by its refund entries and {r_reserving} by its open or succeeded refunds"
            report.disagree("reserved_mismatch", order_no, reserved=reserved, detail=detail)
