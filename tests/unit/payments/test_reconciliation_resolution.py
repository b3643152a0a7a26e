"""What a parked discrepancy moves between clearing and suspense, and the ledger keys that keep it parked once."""

from __future__ import annotations

from datetime import date

import pytest

from payments.ledger.service import MAX_KEY
from payments.reconciliation.models import ReconItem
from payments.reconciliation.resolution import clearing_delta, ledger_key

DAY = date(2026, 11, 27)


def item(kind: str, category: str, stated: int | None, ours: int | None, **refs: object) -> ReconItem:
    values: dict[str, object] = {"occurrence": 1, "order_no": "SO1", "channel_trade_no": "T1", "refund_no": None}
    values.update(refs)
    return ReconItem(kind=kind, category=category, statement_fen=stated, ours_fen=ours, **values)


@pytest.mark.parametrize(
    ("kind", "category", "stated", "ours", "delta"),
    [
        ("payment", "channel_only", 500, None, 500),  # the channel took money we never booked: clearing up
        ("payment", "ours_only", None, 700, -700),  # we booked money the channel never took: clearing down
        ("payment", "amount_mismatch", 1000, 900, 100),
        ("payment", "amount_mismatch", 900, 1000, -100),
        ("refund", "channel_only", 300, None, -300),  # the channel paid back what we never booked as refunded
        ("refund", "ours_only", None, 400, 400),
        ("refund", "amount_mismatch", 300, 200, -100),
    ],
)
def test_clearing_moves_to_what_the_statement_says(
    kind: str, category: str, stated: int | None, ours: int | None, delta: int
) -> None:
    assert clearing_delta(item(kind, category, stated, ours)) == delta


def test_keys_name_the_channel_day_and_reference() -> None:
    assert (
        ledger_key(item("payment", "channel_only", 1, None), "wechatpay", DAY)
        == "recon:wechatpay:2026-11-27:payment:T1"
    )
    ours_only = item("payment", "ours_only", None, 1, channel_trade_no=None)
    assert ledger_key(ours_only, "wechatpay", DAY) == "recon:wechatpay:2026-11-27:payment:SO1"
    refund = item("refund", "ours_only", None, 1, refund_no="R1")
    assert ledger_key(refund, "alipay", DAY) == "recon:alipay:2026-11-27:refund:R1"
    second = item("payment", "channel_only", 1, None, occurrence=2)
    assert ledger_key(second, "wechatpay", DAY).endswith(":payment:T1#2")


def test_the_category_is_not_in_the_key() -> None:
    # A corrected file of the same day finds the reference parked already, whatever its category is now.
    a = ledger_key(item("payment", "channel_only", 1, None), "wechatpay", DAY)
    assert a == ledger_key(item("payment", "amount_mismatch", 2, 1), "wechatpay", DAY)


def test_long_references_are_digested_within_the_key_column() -> None:
    long_a, long_b = "A" * 63 + "x", "A" * 63 + "y"
    key_a = ledger_key(item("payment", "channel_only", 1, None, channel_trade_no=long_a), "c" * 32, DAY)
    key_b = ledger_key(item("payment", "channel_only", 1, None, channel_trade_no=long_b), "c" * 32, DAY)
    assert len(key_a) <= MAX_KEY and len(key_b) <= MAX_KEY and key_a != key_b
