"""Yuan text ↔ fen: strict parsing, exact round trips, and no exception but MoneyError for any input."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.money import MAX_FEN, MoneyError, check_fen, format_yuan, parse_yuan


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("0", 0),
        ("0.01", 1),
        ("12.34", 1234),
        ("12.3", 1230),
        ("12", 1200),
        ("100.00", 10000),
        ("9999999999.99", MAX_FEN),
    ],
)
def test_parses_yuan(text: str, fen: int) -> None:
    assert parse_yuan(text) == fen


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "1.",
        ".5",
        "01",
        "00.10",
        "+1",
        "-1",
        " 1",
        "1 ",
        "1.234",
        "1e3",
        "1E3",
        "0x10",
        "1_000",
        "1,000",
        "NaN",
        "inf",
        "¥1",
        "`1.00",
        "１２",
        "١٢",
        "10000000000.00",
        "9" * 1000,
        "1.2.3",
        "--1",
    ],
)
def test_refuses_anything_else(text: str) -> None:
    with pytest.raises(MoneyError):
        parse_yuan(text)


def test_signs_only_where_allowed() -> None:
    assert parse_yuan("-0.05", signed=True) == -5
    with pytest.raises(MoneyError, match="negative"):
        parse_yuan("-0.05")
    with pytest.raises(MoneyError, match="no sign"):
        parse_yuan("-0.00", signed=True)


def test_exact_decimals_for_alipay() -> None:
    assert parse_yuan("0.10", exact_decimals=True) == 10
    for text in ("0.1", "1"):
        with pytest.raises(MoneyError, match="exactly two"):
            parse_yuan(text, exact_decimals=True)


@pytest.mark.parametrize("value", [1.5, 12, Decimal("1.00"), None, b"1.00", True])
def test_refuses_anything_but_text(value: object) -> None:
    with pytest.raises(MoneyError, match="must be text"):
        parse_yuan(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [1.0, True, "1", None, MAX_FEN + 1, -1, 0])
def test_check_fen_refuses(value: object) -> None:
    with pytest.raises(MoneyError):
        check_fen(value)


def test_check_fen_zero_and_negative_on_request() -> None:
    assert check_fen(0, allow_zero=True) == 0
    assert check_fen(-3, allow_negative=True) == -3


def test_format() -> None:
    assert [format_yuan(v) for v in (0, 1, 10, 1234, -5, MAX_FEN)] == [
        "0.00",
        "0.01",
        "0.10",
        "12.34",
        "-0.05",
        "9999999999.99",
    ]
    for bad in (1.0, MAX_FEN + 1, True):
        with pytest.raises(MoneyError):
            format_yuan(bad)  # type: ignore[arg-type]


@given(st.integers(min_value=-MAX_FEN, max_value=MAX_FEN))
def test_round_trip_from_fen(fen: int) -> None:
    assert parse_yuan(format_yuan(fen), signed=True, exact_decimals=True) == fen


@given(st.from_regex(r"\A(0|[1-9][0-9]{0,9})(\.[0-9]{1,2})?\Z"))
def test_round_trip_from_text(text: str) -> None:
    fen = parse_yuan(text)
    assert Decimal(text) * 100 == fen  # the exact value, no float in between
    assert parse_yuan(format_yuan(fen)) == fen


@given(st.text(max_size=40), st.booleans(), st.booleans())
def test_any_text_parses_or_is_refused_cleanly(text: str, signed: bool, exact: bool) -> None:
    try:
        fen = parse_yuan(text, signed=signed, exact_decimals=exact)
    except MoneyError:
        return
    assert isinstance(fen, int) and abs(fen) <= MAX_FEN
    assert format_yuan(fen) == text or Decimal(text) * 100 == fen


@given(st.one_of(st.floats(), st.integers(), st.none(), st.binary(), st.decimals(allow_nan=True)))
def test_non_text_is_refused_cleanly(value: object) -> None:
    with pytest.raises(MoneyError):
        parse_yuan(value)  # type: ignore[arg-type]
