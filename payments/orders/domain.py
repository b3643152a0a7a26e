"""A contribution order's content and its rules (pure): insurance types, periods, payer, insured person, tiers.

Contribution tiers are configuration, not code: the residents' pension offers a list of yearly amounts that each
region sets per year; employers' unemployment and work-injury contributions are a wage base times a rate, so a
range per month. `check_amount` holds an order's amount against the tier of every period it covers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from authsvc.registry.masking import mask_ssn
from authsvc.registry.ssn import InvalidSSN, normalize
from payments.money import MoneyError, check_fen


class OrderError(ValueError):
    """An order refused before anything was written; the message says why (never with a full SSN)."""


class InsuranceType(StrEnum):
    PENSION = "pension"
    UNEMPLOYMENT = "unemployment"
    WORK_INJURY = "work_injury"


class PayerKind(StrEnum):
    CITIZEN = "citizen"  # pays for themselves
    AGENT = "agent"  # a citizen paying for someone else
    EMPLOYER = "employer"


_REGION = re.compile(r"[1-9][0-9]{5}", re.ASCII)
# The channels an order can name (payments/channels/): the third-party channels, the bank gateway, the card's
# financial account, and the bank's batch withholding for payers who signed an agreement.
CHANNELS = frozenset({"wechatpay", "alipay", "bank", "card", "withholding"})
_YEAR = re.compile(r"(19|20)[0-9]{2}", re.ASCII)
_MONTH = re.compile(r"((?:19|20)[0-9]{2})-(0[1-9]|1[0-2])", re.ASCII)
MAX_PERIODS = 36


@dataclass(frozen=True)
class Tier:
    """What one period of one insurance type in one region and year may cost: a list of amounts (residents'
    pension grades) or an inclusive range (a wage base times a rate). `monthly` says whether periods are months
    ("2025-03") or years ("2025")."""

    monthly: bool
    choices: frozenset[int] = frozenset()
    low: int | None = None
    high: int | None = None

    def __post_init__(self) -> None:
        if bool(self.choices) == (self.low is not None or self.high is not None):
            raise OrderError("a tier is either a list of amounts or a range")
        try:
            for amount in self.choices:
                check_fen(amount)
            ranged = not self.choices
            if ranged and (self.low is None or self.high is None or check_fen(self.low) > check_fen(self.high)):
                raise OrderError("a tier range needs low <= high")
        except MoneyError as exc:
            raise OrderError(f"tier amount: {exc}") from None

    def allows(self, per_period: int) -> bool:
        if self.choices:
            return per_period in self.choices
        return self.low is not None and self.high is not None and self.low <= per_period <= self.high


@dataclass(frozen=True)
class TierTable:
    """Tiers keyed by (insurance type, region, year)."""

    tiers: Mapping[tuple[InsuranceType, str, int], Tier] = field(default_factory=dict)

    @classmethod
    def from_config(cls, rows: object) -> TierTable:
        """From configuration rows such as {"type": "pension", "region": "110000", "year": 2025, "monthly": false,
        "choices_fen": [30000, 50000]} or {..., "monthly": true, "low_fen": 1000, "high_fen": 90000}. Strict, since
        it is the operator's file: unknown keys, strings for numbers, floats and repeated rows are refused, and the
        message names the row and the field."""
        if not isinstance(rows, Sequence) or isinstance(rows, str | bytes) or not rows:
            raise OrderError("contribution tiers: a non-empty list of rows")
        tiers: dict[tuple[InsuranceType, str, int], Tier] = {}
        for number, row in enumerate(rows, 1):
            try:
                key, tier = _tier_row(row)
            except (ValueError, TypeError) as exc:  # OrderError (a bad Tier) is a ValueError too
                raise OrderError(f"contribution tier row {number}: {exc}") from None
            if key in tiers:
                raise OrderError(f"contribution tier row {number}: repeated {key[0]} {key[1]} {key[2]}")
            tiers[key] = tier
        return cls(tiers)

    def tier(self, insurance_type: InsuranceType, region: str, year: int) -> Tier | None:
        return self.tiers.get((insurance_type, region, year))


_TIER_KEYS = frozenset({"type", "region", "year", "monthly", "choices_fen", "low_fen", "high_fen"})


def _fen_field(row: Mapping[str, object], name: str) -> int | None:
    value = row.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError(f"{name} must be a whole number of fen")
    return value


def _tier_row(row: object) -> tuple[tuple[InsuranceType, str, int], Tier]:
    if not isinstance(row, Mapping):
        raise TypeError("a row is an object of type, region, year and amounts")
    unknown = set(row) - _TIER_KEYS
    if unknown:
        raise ValueError(f"unknown field {sorted(str(k)[:32] for k in unknown)[0]!r}")
    missing = [name for name in ("type", "region", "year") if name not in row]
    if missing:
        raise ValueError(f"missing field {missing[0]!r}")
    try:
        insurance_type = InsuranceType(row["type"])
    except ValueError:
        raise ValueError(f"unknown insurance type {str(row['type'])[:32]!r}") from None
    region, year, monthly = row["region"], row["year"], row.get("monthly", False)
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        raise ValueError("region must be a 6-digit administrative division code")
    if not isinstance(year, int) or isinstance(year, bool) or not _YEAR.fullmatch(str(year)):
        raise ValueError("year must be a whole number such as 2026")
    if not isinstance(monthly, bool):
        raise ValueError("monthly must be true or false")
    choices = row.get("choices_fen", [])
    if not isinstance(choices, list) or ("choices_fen" in row and not choices):
        raise ValueError("choices_fen must be a non-empty list of fen")
    for amount in choices:
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise ValueError("choices_fen must be whole numbers of fen")
    tier = Tier(monthly, frozenset(choices), _fen_field(row, "low_fen"), _fen_field(row, "high_fen"))
    return (insurance_type, region, year), tier


@dataclass(frozen=True)
class OrderSpec:
    """What a caller asks to pay. The SSN is kept out of repr so that logging an order never writes it."""

    payer_kind: PayerKind
    payer: str  # the payer's token subject, or the employer's code
    insured_ssn: str = field(repr=False)
    insurance_type: InsuranceType
    periods: tuple[str, ...]
    amount_fen: int
    region: str
    channel: str

    @property
    def masked_ssn(self) -> str:
        return mask_ssn(self.insured_ssn)


def validate(spec: OrderSpec, tiers: TierTable) -> OrderSpec:
    """The spec in canonical form (SSN upper-case, periods sorted) if it may become an order; OrderError otherwise."""
    try:
        payer_kind = PayerKind(spec.payer_kind)
        insurance_type = InsuranceType(spec.insurance_type)
    except ValueError as exc:
        raise OrderError(str(exc)) from None
    if not isinstance(spec.payer, str) or not 0 < len(spec.payer) <= 64:
        raise OrderError("payer must be 1 to 64 characters")
    try:
        ssn = normalize(spec.insured_ssn)
    except InvalidSSN as exc:
        raise OrderError(f"insured social security number: {exc}") from None
    if not isinstance(spec.region, str) or not _REGION.fullmatch(spec.region):
        raise OrderError("region must be a 6-digit administrative division code")
    if spec.channel not in CHANNELS:
        raise OrderError("unknown channel name")
    try:
        amount = check_fen(spec.amount_fen)
    except MoneyError as exc:
        raise OrderError(f"amount: {exc}") from None
    periods = tuple(sorted(set(spec.periods)))
    if not periods or len(periods) != len(spec.periods) or len(periods) > MAX_PERIODS:
        raise OrderError(f"periods: 1 to {MAX_PERIODS} distinct periods")
    canonical = OrderSpec(payer_kind, spec.payer, ssn, insurance_type, periods, amount, spec.region, spec.channel)
    check_amount(canonical, tiers)
    return canonical


def check_amount(spec: OrderSpec, tiers: TierTable) -> None:
    """Every period has a tier, all of the same kind (months or years), and the amount is the same allowed
    per-period amount times the number of periods."""
    per_period, remainder = divmod(spec.amount_fen, len(spec.periods))
    if remainder:
        raise OrderError("the amount does not divide evenly over the periods")
    for period in spec.periods:
        month = _MONTH.fullmatch(period)
        year = int(month.group(1)) if month else int(period) if _YEAR.fullmatch(period) else None
        if year is None:
            raise OrderError(f"period {period[:16]!r} is neither YYYY nor YYYY-MM")
        tier = tiers.tier(spec.insurance_type, spec.region, year)
        if tier is None:
            raise OrderError(f"no {spec.insurance_type} contribution tiers for region {spec.region} in {year}")
        if tier.monthly != bool(month):
            raise OrderError(f"{spec.insurance_type} in {year} is paid by {'month' if tier.monthly else 'year'}")
        if not tier.allows(per_period):
            raise OrderError(f"{per_period} fen per period is not a {spec.insurance_type} tier for {period}")
