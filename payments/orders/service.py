"""Order use cases for the API: who may create and read which orders, the request body → a validated spec, and the
order as the API shows it (insured SSN masked). Flush only; the caller's unit of work commits.

Ownership without a column of its own: an order's `payer_kind` and `payer` say who created it. A cardholder's token
creates `citizen` or `agent` orders with `payer` = the token's subject; a back end (client-credentials token)
creates `employer` orders with `payer` = its client id. A caller sees exactly the orders of its own kind and payer,
so a subject can never match a client id by accident.
"""

from __future__ import annotations

import functools
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from authsvc.oauth.models import OAuthGrant
from authsvc.oauth.resource import AccessToken
from authsvc.registry import repository as registry
from authsvc.registry.masking import mask_ssn
from authsvc.registry.models import Cardholder, CardStatus
from payments.orders import repository
from payments.orders.domain import InsuranceType, OrderError, OrderSpec, PayerKind, TierTable, validate
from payments.orders.models import PaymentOrder
from payments.orders.states import State
from payments.withholding.agreements import require_agreement

WITHHOLDING = "withholding"

# The embedded default's table (demo and tests), used only while SSCARD_PAYMENT_TIERS is unset: the residents'
# pension grades (yearly) and the employers' monthly ranges for two regions, 2025 and 2026. Amounts in fen.
DEFAULT_TIER_CONFIG: list[dict[str, object]] = [
    row
    for region in ("110000", "310000")
    for year in (2025, 2026)
    for row in (
        {
            "type": "pension",
            "region": region,
            "year": year,
            "monthly": False,
            "choices_fen": [20000, 30000, 50000, 100000, 200000, 300000],
        },
        {"type": "unemployment", "region": region, "year": year, "monthly": True, "low_fen": 1000, "high_fen": 90000},
        {"type": "work_injury", "region": region, "year": year, "monthly": True, "low_fen": 500, "high_fen": 60000},
    )
]
DEFAULT_TIERS = TierTable.from_config(DEFAULT_TIER_CONFIG)
TIER_FORMATS = {".json": "JSON", ".toml": "TOML"}


def load_tiers(path: Path) -> TierTable:
    """The operator's tier file (SSCARD_PAYMENT_TIERS): JSON (a list of rows, or {"tiers": [...]}) or TOML
    (`[[tiers]]` tables), by its suffix, in the shape TierTable.from_config takes. OrderError names the problem."""
    kind = TIER_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise OrderError(f"contribution tiers: {path.name} is neither .json nor .toml")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OrderError(f"contribution tiers: cannot read {path}: {exc}") from None
    try:
        loads = tomllib.loads if kind == "TOML" else json.loads
        doc: Any = loads(text, parse_float=_no_float)
    except (ValueError, tomllib.TOMLDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise OrderError(f"contribution tiers: {path.name} is not valid {kind}: {exc}") from None
    if isinstance(doc, Mapping):
        if set(doc) != {"tiers"}:
            raise OrderError('contribution tiers: the file holds one key, "tiers", with the list of rows')
        doc = doc["tiers"]
    return TierTable.from_config(doc)


def _no_float(text: str) -> int:
    # A float in a money file has already lost the amount (and 2025.0 is not a year): refused, like parse_yuan does.
    raise ValueError(f"{text[:32]} is not a whole number")


@functools.cache
def _cached_tiers(path: Path) -> TierTable:
    return load_tiers(path)


def configured_tiers(tier_file: Path | None) -> TierTable:
    """The tiers orders are held to: the operator's file (SSCARD_PAYMENT_TIERS, read once per process; a change
    needs a restart, as any setting does) or, unset, the built-in table."""
    return DEFAULT_TIERS if tier_file is None else _cached_tiers(tier_file.resolve())


MAX_LIST = 100
_FIELDS = frozenset({"payer_kind", "insured_ssn", "insurance_type", "periods", "amount_fen", "region", "channel"})


@dataclass(frozen=True)
class Caller:
    """Who is asking: a cardholder through a client (`citizen`) or a back end acting for itself."""

    client_id: str
    subject: str
    citizen: bool

    @property
    def payer(self) -> str:
        return self.subject if self.citizen else self.client_id

    @property
    def kinds(self) -> tuple[str, ...]:
        return (PayerKind.CITIZEN, PayerKind.AGENT) if self.citizen else (PayerKind.EMPLOYER,)


def spec_from_json(doc: Any, caller: Caller, tiers: TierTable = DEFAULT_TIERS) -> OrderSpec:
    """A validated spec from the request body; OrderError (never quoting the SSN) otherwise."""
    if not isinstance(doc, Mapping):
        raise OrderError("the body must be a JSON object")
    unknown = set(doc) - _FIELDS
    if unknown:
        raise OrderError(f"unknown fields: {', '.join(sorted(str(k)[:32] for k in unknown))}")
    for name in ("insured_ssn", "insurance_type", "region", "channel"):
        if not isinstance(doc.get(name), str):
            raise OrderError(f"{name} must be a string")
    amount = doc.get("amount_fen")
    if not isinstance(amount, int) or isinstance(amount, bool):  # 12.5 or "1250" is not fen
        raise OrderError("amount_fen must be an integer number of fen")
    periods = doc.get("periods")
    if not isinstance(periods, Sequence) or isinstance(periods, str) or not all(isinstance(p, str) for p in periods):
        raise OrderError("periods must be a list of strings")
    default_kind = PayerKind.CITIZEN if caller.citizen else PayerKind.EMPLOYER
    kind = doc.get("payer_kind", default_kind)
    if kind not in caller.kinds:
        raise OrderError(f"payer_kind must be one of {', '.join(caller.kinds)} for this caller")
    try:
        insurance_type = InsuranceType(doc["insurance_type"])
    except ValueError:
        raise OrderError("unknown insurance_type") from None
    spec = OrderSpec(
        PayerKind(kind),
        caller.payer,
        doc["insured_ssn"],
        insurance_type,
        tuple(periods),
        amount,
        doc["region"],
        doc["channel"],
    )
    return validate(spec, tiers)


def create(
    db: Session, spec: OrderSpec, *, idempotency_key: str | None = None, idempotency_body: str | None = None
) -> PaymentOrder:
    """Flush a new order; IntegrityError if `idempotency_key` (a digest) already belongs to an order, AgreementError
    for a withholding order without an active agreement (better refused now than a failed debit weeks later)."""
    if spec.channel == WITHHOLDING:
        require_agreement(db, spec.payer_kind, spec.payer, spec.insured_ssn)
    return repository.add_order(db, spec, idempotency_key=idempotency_key, idempotency_body=idempotency_body)


def order_by_idempotency_key(db: Session, key_digest: str) -> PaymentOrder | None:
    return repository.order_by_idempotency_key(db, key_digest)


def own_order(db: Session, caller: Caller, order_no: str) -> PaymentOrder | None:
    """The order if this caller created it; None for unknown and for someone else's alike (no oracle)."""
    order = repository.order_by_no(db, order_no)
    if order is None or order.payer != caller.payer or order.payer_kind not in caller.kinds:
        return None
    return order


def own_orders(db: Session, caller: Caller, limit: int = MAX_LIST) -> list[PaymentOrder]:
    query = (
        select(PaymentOrder)
        .where(PaymentOrder.payer == caller.payer, PaymentOrder.payer_kind.in_(caller.kinds))
        .order_by(PaymentOrder.id.desc())
        .limit(limit)
    )
    return list(db.scalars(query))


def card_for_payment(db: Session, token: AccessToken) -> str | None:
    """The card number whose financial account pays for a card payment: the only live, active card of the person
    who logged in. The token's `sub` may be a portal's pairwise one, so a portal's token is traced through its
    grant to the cardholder's own subject; a kiosk's token carries that subject itself."""
    subject = token.subject
    if token.grant_id is not None:
        grant = db.get(OAuthGrant, token.grant_id)
        if grant is None:
            return None
        subject = grant.subject
    holder = db.scalar(select(Cardholder).where(Cardholder.subject == subject))
    if holder is None:
        return None
    cards = [card for card in registry.live_cards(db, holder.id) if card.status == CardStatus.ACTIVE]
    return cards[0].card_number if len(cards) == 1 else None


def describe(order: PaymentOrder) -> dict[str, Any]:
    """The order as the API shows it. The insured SSN only masked: the payer may be paying for someone else, and
    a replayed response is kept in the shared store, which must never hold a full SSN."""
    return {
        "id": order.order_no,
        "state": order.state,
        "payer_kind": order.payer_kind,
        "insured_ssn_masked": mask_ssn(order.insured_ssn),
        "insurance_type": order.insurance_type,
        "periods": list(order.periods),
        "amount_fen": order.amount_fen,
        "region": order.region,
        "channel": order.channel,
        "refunded_fen": order.refunded_fen,
        "created_at": order.created_at.isoformat(),
    }


def describe_created(order: PaymentOrder) -> dict[str, Any]:
    """The order as the creating call answered: the creation state, whatever happened to the order since. Only the
    columns fixed at creation are read, so the answer rebuilt from the row after a lost response (a retry under the
    same Idempotency-Key) is the same, byte for byte, as the one the first request produced."""
    return {**describe(order), "state": State.CREATED, "refunded_fen": 0}
