"""The checks every parsed statement line passes before it is staged: anything else refuses the file."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.channels.base import LineKind, StatementError, StatementLine
from payments.reconciliation.staging import _row, file_digest

AT = datetime(2026, 11, 27, tzinfo=UTC)


def line(**changes: object) -> StatementLine:
    values: dict[str, object] = dict(
        line_no=7, kind=LineKind.PAYMENT, order_no="SO1", channel_trade_no="T1", amount_fen=100, occurred_at=AT
    )
    values.update(changes)
    return StatementLine(**values)  # type: ignore[arg-type]


def test_a_payment_and_a_refund_row() -> None:
    assert _row(line()) == (7, "payment", "SO1", "T1", None, None, 100)
    refund = line(kind=LineKind.REFUND, refund_no="R1", channel_refund_no="CR1", amount_fen=5)
    assert _row(refund) == (7, "refund", "SO1", "T1", "R1", "CR1", 5)


@pytest.mark.parametrize(
    "changes",
    [
        {"amount_fen": 0},
        {"amount_fen": -1},
        {"amount_fen": 1.5},
        {"amount_fen": True},
        {"order_no": ""},
        {"channel_trade_no": "T" * 65},
        {"order_no": "SO\n1"},
        {"kind": LineKind.REFUND},  # no refund number
        {"kind": "payout"},
    ],
)
def test_bad_lines_are_refused_with_their_number(changes: dict[str, object]) -> None:
    with pytest.raises(StatementError) as refused:
        _row(line(**changes))
    assert refused.value.line_no == 7


def test_something_other_than_a_line_is_refused() -> None:
    with pytest.raises(StatementError):
        _row(("payment", "SO1"))  # type: ignore[arg-type]


@given(
    kind=st.sampled_from([LineKind.PAYMENT, LineKind.REFUND, "x"]),
    order_no=st.text(max_size=70),
    trade_no=st.text(max_size=70),
    refund_no=st.none() | st.text(max_size=70),
    amount=st.integers(min_value=-(2**63), max_value=2**63) | st.floats() | st.booleans(),
)
def test_fuzzed_lines_stage_or_are_refused(
    kind: object, order_no: str, trade_no: str, refund_no: str | None, amount: object
) -> None:
    candidate = line(kind=kind, order_no=order_no, channel_trade_no=trade_no, refund_no=refund_no, amount_fen=amount)
    try:
        row = _row(candidate)
    except StatementError:
        return
    assert type(row[6]) is int and row[6] > 0 and row[2] == order_no and row[3] == trade_no


def test_the_digest_is_of_the_bytes_as_given() -> None:
    assert file_digest([b"a\n", b"b\n"]) == file_digest([b"a\nb\n"]) != file_digest([b"a\r\n", b"b\n"])
