"""Contribution tiers from the operator's file (SSCARD_PAYMENT_TIERS): JSON or TOML, strict, read and validated at
start, where a bad file is a configuration error naming the variable and the problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authsvc.config import ConfigError, load_settings
from payments.orders.domain import InsuranceType, OrderError, OrderSpec, PayerKind, Tier, TierTable, validate
from payments.orders.service import DEFAULT_TIERS, configured_tiers, load_tiers

PENSION = {"type": "pension", "region": "440300", "year": 2026, "monthly": False, "choices_fen": [18000, 36000]}
WAGES = {"type": "unemployment", "region": "440300", "year": 2026, "monthly": True, "low_fen": 800, "high_fen": 7000}
TOML = """
[[tiers]]
type = "pension"
region = "440300"
year = 2026
monthly = false
choices_fen = [18000, 36000]

[[tiers]]
type = "unemployment"
region = "440300"
year = 2026
monthly = true
low_fen = 800
high_fen = 7000
"""
EXPECTED = {
    (InsuranceType.PENSION, "440300", 2026): Tier(monthly=False, choices=frozenset({18000, 36000})),
    (InsuranceType.UNEMPLOYMENT, "440300", 2026): Tier(monthly=True, low=800, high=7000),
}


def write(tmp_path: Path, name: str, content: Any) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "content"),
    [("tiers.json", [PENSION, WAGES]), ("tiers.json", {"tiers": [PENSION, WAGES]}), ("tiers.toml", TOML)],
    ids=["json-list", "json-object", "toml"],
)
def test_a_tier_file_is_loaded(tmp_path: Path, name: str, content: Any) -> None:
    assert load_tiers(write(tmp_path, name, content)).tiers == EXPECTED


def test_orders_are_held_to_the_configured_tiers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSCARD_PAYMENT_TIERS", str(write(tmp_path, "tiers.toml", TOML)))
    tiers = configured_tiers(load_settings().payment_tiers)
    spec = OrderSpec(
        PayerKind.CITIZEN, "s", "110105199003072813", InsuranceType.PENSION, ("2026",), 36000, "440300", "wechatpay"
    )
    assert validate(spec, tiers).amount_fen == 36000
    # The built-in table's regions are not in the operator's file, and its grades are not the file's.
    with pytest.raises(OrderError, match="no pension contribution tiers for region 110000"):
        validate(OrderSpec(**{**spec.__dict__, "region": "110000", "amount_fen": 30000}), tiers)
    with pytest.raises(OrderError, match="not a pension tier"):
        validate(OrderSpec(**{**spec.__dict__, "amount_fen": 30000}), tiers)


def test_without_a_file_the_built_in_table_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSCARD_PAYMENT_TIERS", raising=False)
    assert load_settings().payment_tiers is None
    assert configured_tiers(None) is DEFAULT_TIERS


BAD_ROWS = [
    ({**PENSION, "choices_fen": [18000.0]}, "not a whole number"),
    ({**PENSION, "choices_fen": ["18000"]}, "choices_fen must be whole numbers"),
    ({**PENSION, "choices_fen": [True]}, "choices_fen must be whole numbers"),
    ({**PENSION, "choices_fen": []}, "non-empty list"),
    ({**PENSION, "choices_fen": 18000}, "non-empty list"),
    ({**PENSION, "choices_fen": [0]}, "tier amount"),
    ({**PENSION, "year": "2026"}, "year must be a whole number"),
    ({**PENSION, "year": 26}, "year must be a whole number"),
    ({**PENSION, "monthly": "false"}, "monthly must be true or false"),
    ({**PENSION, "region": 440300}, "region must be"),
    ({**PENSION, "type": "dental"}, "unknown insurance type 'dental'"),
    ({**PENSION, "amount": 1}, "unknown field 'amount'"),
    ({k: v for k, v in PENSION.items() if k != "year"}, "missing field 'year'"),
    ({**WAGES, "low_fen": 9000}, "low <= high"),
    ({**WAGES, "high_fen": "7000"}, "high_fen must be a whole number"),
    ({**WAGES, "choices_fen": [800]}, "either a list of amounts or a range"),
]


@pytest.mark.parametrize(("row", "problem"), BAD_ROWS)
def test_a_bad_row_is_refused_by_number_and_field(tmp_path: Path, row: dict[str, Any], problem: str) -> None:
    with pytest.raises(OrderError, match="contribution tier") as refused:
        load_tiers(write(tmp_path, "tiers.json", [WAGES, row]))
    assert problem in str(refused.value)
    if problem != "not a whole number":  # (a float is refused while the JSON is read, before there are rows)
        assert "row 2: " in str(refused.value)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("tiers.yaml", "[]", "neither .json nor .toml"),
        ("tiers.json", "[{", "not valid JSON"),
        ("tiers.toml", "[[tiers]\ntype=", "not valid TOML"),
        ("tiers.toml", "[[tiers]]\ntype = 'pension'\nregion = '440300'\nyear = 2026\nchoices_fen = [1.5]\n", "1.5"),
        ("tiers.json", [], "non-empty list of rows"),
        ("tiers.json", {"tiers": [PENSION], "extra": 1}, 'one key, "tiers"'),
        ("tiers.json", {"rows": [PENSION]}, 'one key, "tiers"'),
        ("tiers.json", '"pension"', "non-empty list of rows"),
        ("tiers.json", [PENSION, PENSION], "row 2: repeated pension 440300 2026"),
    ],
)
def test_a_bad_file_is_refused(tmp_path: Path, name: str, content: Any, problem: str) -> None:
    with pytest.raises(OrderError, match="contribution tier") as refused:
        load_tiers(write(tmp_path, name, content))
    assert problem in str(refused.value)


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OrderError, match="cannot read"):
        load_tiers(tmp_path / "missing.json")
    (tmp_path / "latin1.json").write_bytes(b"[\xff]")
    with pytest.raises(OrderError, match="cannot read"):
        load_tiers(tmp_path / "latin1.json")


def test_a_bad_file_stops_the_start_naming_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSCARD_PAYMENT_TIERS", str(write(tmp_path, "tiers.json", [{**PENSION, "year": "2026"}])))
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert "SSCARD_PAYMENT_TIERS" in message and "row 1: year must be a whole number" in message
    monkeypatch.setenv("SSCARD_PAYMENT_TIERS", str(tmp_path / "nowhere.toml"))
    with pytest.raises(ConfigError, match="SSCARD_PAYMENT_TIERS: contribution tiers: cannot read"):
        load_settings()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ROW_VALUES = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["pension", "unemployment", "work_injury", "x"]) | JSON_VALUES,
        "region": st.sampled_from(["440300", "000000"]) | JSON_VALUES,
        "year": st.integers(1800, 2200) | JSON_VALUES,
        "monthly": st.booleans() | JSON_VALUES,
        "choices_fen": st.lists(st.integers(-5, 10**12), max_size=3) | JSON_VALUES,
        "low_fen": st.integers(-5, 10**12) | JSON_VALUES,
        "high_fen": st.integers(-5, 10**12) | JSON_VALUES,
        "other": JSON_VALUES,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ROW_VALUES, max_size=3) | JSON_VALUES)
def test_any_configuration_is_a_table_or_an_order_error(rows: Any) -> None:
    try:
        table = TierTable.from_config(rows)
    except OrderError:
        return
    for tier in table.tiers.values():
        assert tier.choices or (tier.low is not None and tier.high is not None and tier.low <= tier.high)
