"""Order specs against contribution tiers (pure): what is accepted, and that refusals never carry the SSN."""

from __future__ import annotations

from dataclasses import replace

import pytest

from payments.orders.domain import InsuranceType, OrderError, OrderSpec, PayerKind, Tier, TierTable, validate

SSN = "110105199003072813"
TIERS = TierTable.from_config(
    [
        {"type": "pension", "region": "110000", "year": 2025, "choices_fen": [30000, 100000]},
        {"type": "pension", "region": "110000", "year": 2026, "choices_fen": [100000]},
        {"type": "unemployment", "region": "110000", "year": 2025, "monthly": True, "low_fen": 1000, "high_fen": 9000},
    ]
)
PENSION = OrderSpec(
    PayerKind.AGENT, "subject-1", SSN.lower(), InsuranceType.PENSION, ("2025",), 30000, "110000", "alipay"
)
MONTHS = OrderSpec(
    PayerKind.EMPLOYER,
    "91110000X",
    SSN,
    InsuranceType.UNEMPLOYMENT,
    ("2025-02", "2025-01"),
    10000,
    "110000",
    "bank",
)


def test_accepts_a_tier_and_canonicalises() -> None:
    assert validate(PENSION, TIERS).insured_ssn == SSN
    assert validate(MONTHS, TIERS).periods == ("2025-01", "2025-02")
    assert validate(replace(PENSION, periods=("2026", "2025"), amount_fen=200000), TIERS).amount_fen == 200000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"amount_fen": 30001}, "not a pension tier"),
        ({"amount_fen": 0}, "more than zero"),
        ({"amount_fen": 300.0}, "integer"),
        ({"periods": ("2025", "2026"), "amount_fen": 60000}, "not a pension tier for 2026"),
        ({"periods": ("2025", "2025"), "amount_fen": 60000}, "distinct"),
        ({"periods": ()}, "distinct"),
        ({"periods": ("2024",)}, "no pension contribution tiers"),
        ({"periods": ("2025-01",)}, "paid by year"),
        ({"periods": ("25",)}, "neither YYYY nor YYYY-MM"),
        ({"periods": ("2025", "2026"), "amount_fen": 130001}, "divide evenly"),
        ({"region": "11000"}, "region"),
        ({"channel": "Bank!"}, "channel"),
        ({"payer": ""}, "payer"),
        ({"payer_kind": "robot"}, "robot"),
        ({"insured_ssn": "110105199003072812"}, "check character"),
    ],
)
def test_refusals(change: dict[str, object], message: str) -> None:
    with pytest.raises(OrderError, match=message) as refused:
        validate(replace(PENSION, **change), TIERS)  # type: ignore[arg-type]
    assert SSN not in str(refused.value)


def test_monthly_ranges() -> None:
    assert validate(replace(MONTHS, amount_fen=18000), TIERS).amount_fen == 18000
    with pytest.raises(OrderError, match="not a unemployment tier"):
        validate(replace(MONTHS, amount_fen=20000), TIERS)
    with pytest.raises(OrderError, match="paid by month"):
        validate(replace(MONTHS, periods=("2025",), amount_fen=5000), TIERS)


@pytest.mark.parametrize(
    "row",
    [
        {"type": "pension", "region": "110000", "year": 2025},
        {"type": "pension", "region": "110000", "year": 2025, "choices_fen": [1], "low_fen": 1, "high_fen": 2},
        {"type": "pension", "region": "110000", "year": 2025, "low_fen": 5, "high_fen": 2},
        {"type": "pension", "region": "110000", "year": 2025, "choices_fen": [1.5]},
        {"type": "pension", "region": "11", "year": 2025, "choices_fen": [1]},
        {"type": "dental", "region": "110000", "year": 2025, "choices_fen": [1]},
        {"region": "110000", "year": 2025, "choices_fen": [1]},
    ],
)
def test_bad_tier_configuration(row: dict[str, object]) -> None:
    with pytest.raises(OrderError, match="tier"):
        TierTable.from_config([row])


def test_repeated_tier_rows_are_refused() -> None:
    row = {"type": "pension", "region": "110000", "year": 2025, "choices_fen": [1]}
    with pytest.raises(OrderError, match="repeated"):
        TierTable.from_config([row, row])
    assert Tier(monthly=True, low=1, high=1).allows(1)
