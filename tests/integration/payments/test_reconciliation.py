"""Reconciliation of a channel's daily statement on both backends: every category, resolution by query and
back-fill, callbacks already held in suspense, parking, idempotent re-runs, refused files, an empty day, and a
statement of some thousands of lines. The ledger check stays balanced throughout."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from authsvc.cli import main
from authsvc.database import unit_of_work
from authsvc.runtime import Runtime
from payments.callbacks import inbox
from payments.channels.base import (
    ChannelDeclined,
    ChannelEvent,
    ChannelTrade,
    ChannelUnavailable,
    Kind,
    LineKind,
    RefundOutcome,
    RefundStatus,
    StatementError,
    StatementLine,
    TradeStatus,
)
from payments.ledger.check import check
from payments.ledger.models import LedgerEntry
from payments.ledger.service import balances, entry_by_key
from payments.money import parse_yuan
from payments.orders import accounting, repository
from payments.orders.domain import InsuranceType, OrderSpec, PayerKind, Tier, TierTable, validate
from payments.orders.models import PaymentOrder, PaymentRefund
from payments.reconciliation.matching import CHINA
from payments.reconciliation.models import ReconItem, ReconRun
from payments.reconciliation.service import StatementSource, reconcile, report
from payments.reconciliation.staging import file_digest

CH = "wechatpay"
DAY = date(2026, 11, 27)
ON_DAY = datetime(2026, 11, 27, 10, 0, tzinfo=CHINA)
AMOUNT = 100000
TIERS = TierTable({(InsuranceType.PENSION, "110000", 2025): Tier(monthly=False, choices=frozenset({30000, AMOUNT}))})
CLEARING, FUND, SUSPENSE, REFUNDS = f"clearing:{CH}", "fund:pension:110000", f"suspense:{CH}", f"refunds:{CH}"


# --- a minimal statement format for the engine's tests: kind,order_no,trade_no,yuan[,refund_no] ------------------


def parse_lines(data: Iterable[bytes]) -> Iterator[StatementLine]:
    for no, raw in enumerate(data, start=1):
        fields = raw.decode().rstrip("\n").split(",")
        if fields == ["kind", "order_no", "trade_no", "amount", "refund_no"]:
            continue
        if len(fields) != 5 or fields[0] not in ("payment", "refund"):
            raise StatementError(no, "not a statement line")
        kind = LineKind(fields[0])
        try:
            amount = parse_yuan(fields[3])
        except ValueError:
            raise StatementError(no, "bad amount") from None
        yield StatementLine(
            no, kind, fields[1], fields[2], amount, ON_DAY, refund_no=fields[4] or None, channel_refund_no=None
        )


def statement(*rows: tuple[str, str, str, int, str]) -> list[bytes]:
    head = [b"kind,order_no,trade_no,amount,refund_no\n"]
    return head + [f"{k},{o},{t},{a // 100}.{a % 100:02d},{r}\n".encode() for k, o, t, a, r in rows]


def pay(order_no: str, amount: int = AMOUNT, trade: str | None = None) -> tuple[str, str, str, int, str]:
    return ("payment", order_no, trade or f"T{order_no}", amount, "")


def ref(order_no: str, refund_no: str, amount: int) -> tuple[str, str, str, int, str]:
    return ("refund", order_no, f"T{order_no}", amount, refund_no)


class Channel:
    """The channel's side of a query, scripted per order; counts what was asked."""

    def __init__(
        self,
        trades: dict[str, ChannelTrade] | None = None,
        *,
        down: bool = False,
        refunds: dict[str, RefundStatus] | None = None,
    ) -> None:
        self.trades = trades or {}
        self.refunds = refunds or {}
        self.down = down
        self.asked: list[str] = []
        self.asked_refunds: list[str] = []

    def query(self, order_no: str) -> ChannelTrade:
        self.asked.append(order_no)
        if self.down:
            raise ChannelUnavailable("timeout")
        return self.trades.get(order_no, ChannelTrade(order_no, TradeStatus.NOT_FOUND))

    def query_refund(self, order_no: str, refund_no: str) -> RefundStatus:
        self.asked_refunds.append(refund_no)
        if refund_no not in self.refunds:
            raise ChannelDeclined("RESOURCE_NOT_EXISTS", "no such refund")
        return self.refunds[refund_no]

    def source(self) -> StatementSource:
        return StatementSource(CH, parse_lines, self.query, self.query_refund)


def paid_trade(order_no: str, amount: int = AMOUNT) -> ChannelTrade:
    return ChannelTrade(order_no, TradeStatus.PAID, amount, f"T{order_no}", ON_DAY, raw_state="SUCCESS")


# --- our side ------------------------------------------------------------------------------------------------------


def new_order(runtime: Runtime, channel: str = CH) -> str:
    spec = OrderSpec(
        PayerKind.CITIZEN, "s1", "110105199003072813", InsuranceType.PENSION, ("2025",), AMOUNT, "110000", channel
    )
    with unit_of_work(runtime.sessions) as db:
        order_no = repository.add_order(db, validate(spec, TIERS)).order_no
        accounting.submit(db, order_no)
        return order_no


def paid_order(runtime: Runtime, at: datetime = ON_DAY) -> str:
    order_no = new_order(runtime)
    with unit_of_work(runtime.sessions) as db:
        accounting.mark_paid(db, order_no, amount_fen=AMOUNT)
        db.execute(sa.update(PaymentOrder).where(PaymentOrder.order_no == order_no).values(paid_at=at))
    return order_no


def refunded(runtime: Runtime, order_no: str, refund_no: str, amount: int, at: datetime = ON_DAY) -> None:
    with unit_of_work(runtime.sessions) as db:
        accounting.request_refund(db, order_no, refund_no, amount)
        accounting.refund_succeeded(db, refund_no)
        db.execute(sa.update(PaymentRefund).where(PaymentRefund.refund_no == refund_no).values(settled_at=at))


def ledger(runtime: Runtime) -> dict[str, int]:
    with unit_of_work(runtime.sessions) as db:
        assert check(db).ok
        return {code: amount for code, amount in balances(db).items() if amount}


def state(runtime: Runtime, order_no: str) -> str:
    with unit_of_work(runtime.sessions) as db:
        order = repository.order_by_no(db, order_no)
        assert order is not None
        return order.state


def run_report(runtime: Runtime, run_id: int) -> dict:
    with unit_of_work(runtime.sessions) as db:
        result = report(db, run_id)
        assert result is not None
        return result


def items(result: dict) -> dict[tuple[str, str, str | None], tuple[str, str | None]]:
    """(kind, category, order) → (resolution, ledger key) for each discrepancy."""
    return {(i["kind"], i["category"], i["order_no"]): (i["resolution"], i["ledger_key"]) for i in result["items"]}


def count(runtime: Runtime, model: type) -> int:
    with unit_of_work(runtime.sessions) as db:
        return db.scalar(sa.select(sa.func.count()).select_from(model)) or 0


# --- tests -----------------------------------------------------------------------------------------------------------


def test_every_category_resolved_or_parked(runtime: Runtime) -> None:
    matched, ours_only, mismatch, unpaid = (paid_order(runtime), paid_order(runtime), paid_order(runtime), None)
    unpaid = new_order(runtime)  # the callback never came: the query recovers it
    refund_matched, refund_ours = paid_order(runtime), paid_order(runtime)
    refunded(runtime, refund_matched, "R1", 30000)
    refunded(runtime, refund_ours, "R2", 40000)
    before = ledger(runtime)
    channel = Channel({unpaid: paid_trade(unpaid)})
    lines = statement(
        pay(matched),
        pay(mismatch, AMOUNT + 500),
        pay("SOunknown"),
        pay(unpaid),
        ref(refund_matched, "R1", 30000),
        ref(refund_matched, "R9", 20000),  # a refund we never asked for
        pay(refund_matched),
        pay(refund_ours),
    )
    done = reconcile(runtime.sessions, channel.source(), DAY, lines)
    assert not done.reused and done.lines == 8
    result = run_report(runtime, done.run_id)
    assert result["status"] == "resolved" and result["lines"] == 8 and result["day"] == "2026-11-27"
    pays, refunds = result["totals"]["payment"], result["totals"]["refund"]
    assert pays["matched"] == {"count": 3, "statement_fen": 3 * AMOUNT, "ours_fen": 3 * AMOUNT}
    assert pays["channel_only"] == {"count": 2, "statement_fen": 2 * AMOUNT, "ours_fen": AMOUNT}
    assert pays["ours_only"] == {"count": 1, "statement_fen": 0, "ours_fen": AMOUNT}
    assert pays["amount_mismatch"] == {"count": 1, "statement_fen": AMOUNT + 500, "ours_fen": AMOUNT}
    assert refunds["matched"]["count"] == 1 and refunds["channel_only"]["statement_fen"] == 20000
    assert refunds["ours_only"] == {"count": 1, "statement_fen": 0, "ours_fen": 40000}
    key = f"recon:{CH}:2026-11-27"
    assert items(result) == {
        ("payment", "ours_only", ours_only): ("parked", f"{key}:payment:{ours_only}"),
        ("payment", "amount_mismatch", mismatch): ("parked", f"{key}:payment:T{mismatch}"),
        ("payment", "channel_only", "SOunknown"): ("parked", f"{key}:payment:TSOunknown"),
        ("payment", "channel_only", unpaid): ("backfilled", f"order:{unpaid}:paid"),
        ("refund", "channel_only", refund_matched): ("parked", f"{key}:refund:R9"),
        ("refund", "ours_only", refund_ours): ("parked", f"{key}:refund:R2"),
    }
    line_nos = {i["order_no"]: i["line_no"] for i in result["items"] if i["kind"] == "payment"}
    assert line_nos == {ours_only: None, mismatch: 3, "SOunknown": 4, unpaid: 5}
    assert state(runtime, unpaid) == "paid" and sorted(channel.asked) == sorted([ours_only, unpaid])
    # Clearing now says what the channel's statement says; the differences wait in suspense.
    after = ledger(runtime)
    assert after[FUND] == before[FUND] + AMOUNT  # only the confirmed back-fill reached the fund
    parked = AMOUNT + 500 - AMOUNT + AMOUNT - AMOUNT - 20000 + 40000  # mismatch, unknown, ours-only, refunds
    assert after.get(SUSPENSE, 0) == parked
    assert after[CLEARING] == before[CLEARING] + AMOUNT + parked


def test_back_fill_posts_under_the_callbacks_key_once(runtime: Runtime) -> None:
    order_no = new_order(runtime)
    channel = Channel({order_no: paid_trade(order_no)})
    reconcile(runtime.sessions, channel.source(), DAY, statement(pay(order_no)))
    # the late callback afterwards is a duplicate: no second entry
    with unit_of_work(runtime.sessions) as db:
        entry = entry_by_key(db, f"order:{order_no}:paid")
        assert entry is not None
        assert accounting.mark_paid(db, order_no, amount_fen=AMOUNT).refused is not None
    assert ledger(runtime) == {CLEARING: AMOUNT, FUND: AMOUNT}


@pytest.mark.parametrize(
    ("answer", "note"),
    [
        (None, "channel query failed: ChannelUnavailable"),
        (ChannelTrade("x", TradeStatus.UNPAID, AMOUNT, raw_state="NOTPAY"), "the channel reports unpaid (NOTPAY)"),
        (ChannelTrade("x", TradeStatus.PAID, AMOUNT - 1, raw_state="SUCCESS"), "the channel reports paid (SUCCESS)"),
    ],
)
def test_an_unconfirmed_charge_is_parked_not_paid(runtime: Runtime, answer: ChannelTrade | None, note: str) -> None:
    order_no = new_order(runtime)
    channel = Channel({order_no: answer} if answer else {}, down=answer is None)
    done = reconcile(runtime.sessions, channel.source(), DAY, statement(pay(order_no)))
    (item,) = run_report(runtime, done.run_id)["items"]
    assert (item["category"], item["resolution"]) == ("channel_only", "parked") and item["note"].startswith(note)
    assert state(runtime, order_no) == "pending" and channel.asked == [order_no]
    assert ledger(runtime) == {CLEARING: AMOUNT, SUSPENSE: AMOUNT}


def test_without_a_query_everything_is_parked(runtime: Runtime) -> None:
    order_no = new_order(runtime)
    done = reconcile(runtime.sessions, StatementSource(CH, parse_lines), DAY, statement(pay(order_no)))
    (item,) = run_report(runtime, done.run_id)["items"]
    assert item["resolution"] == "parked" and item["note"] == "no channel query configured"
    assert state(runtime, order_no) == "pending"


def test_ours_only_confirmed_by_the_channel_is_matched_late(runtime: Runtime) -> None:
    # Paid at 23:59:59 China time on DAY by our clock; the channel booked it just after midnight (next statement).
    order_no = paid_order(runtime, at=datetime(2026, 11, 27, 23, 59, 59, tzinfo=CHINA))
    not_today = paid_order(runtime, at=datetime(2026, 11, 28, 0, 0, 0, tzinfo=CHINA))  # the next day: not ours-only
    channel = Channel({order_no: paid_trade(order_no)})
    done = reconcile(runtime.sessions, channel.source(), DAY, statement())
    result = run_report(runtime, done.run_id)
    assert items(result) == {("payment", "ours_only", order_no): ("matched_late", None)}
    assert channel.asked == [order_no] and not_today not in str(result)
    assert ledger(runtime) == {CLEARING: 2 * AMOUNT, FUND: 2 * AMOUNT}  # nothing posted
    # ... and the next day's statement matches it, whatever day we recorded it.
    nxt = reconcile(
        runtime.sessions, channel.source(), DAY + timedelta(days=1), statement(pay(order_no), pay(not_today))
    )
    assert run_report(runtime, nxt.run_id)["totals"]["payment"]["matched"]["count"] == 2
    assert run_report(runtime, nxt.run_id)["items"] == []


def test_money_the_inbox_already_holds_is_not_parked_twice(runtime: Runtime) -> None:
    closed = new_order(runtime)
    with unit_of_work(runtime.sessions) as db:
        accounting.close(db, closed)
    for order_no, amount, tid in (("SOnever", 5000, "T1"), (closed, AMOUNT, "T2")):
        event = ChannelEvent(CH, f"{tid}:SUCCESS", order_no, tid, "SUCCESS", Kind.PAID, amount, "CNY", {})
        with unit_of_work(runtime.sessions) as db:
            inbox.receive(db, event)
    held = ledger(runtime)
    assert held == {CLEARING: 5000 + AMOUNT, SUSPENSE: 5000 + AMOUNT}
    lines = statement(pay("SOnever", 5000, "T1"), pay(closed, AMOUNT, "T2"), pay("SOnever", 5000, "T1"))
    done = reconcile(runtime.sessions, Channel().source(), DAY, lines)
    result = run_report(runtime, done.run_id)
    resolved = sorted((i["order_no"], i["occurrence"], i["resolution"]) for i in result["items"])
    # The third line charges the unknown order a second time: that money is not held by any callback.
    assert resolved == [(closed, 1, "held_by_callback"), ("SOnever", 1, "held_by_callback"), ("SOnever", 2, "parked")]
    assert ledger(runtime) == {CLEARING: 2 * 5000 + AMOUNT, SUSPENSE: 2 * 5000 + AMOUNT}
    with unit_of_work(runtime.sessions) as db:
        assert entry_by_key(db, f"recon:{CH}:2026-11-27:payment:T1#2") is not None


def test_the_same_file_again_is_the_same_run(runtime: Runtime) -> None:
    order_no, extra = paid_order(runtime), paid_order(runtime)
    lines = statement(pay(order_no), pay("SOunknown"))
    first = reconcile(runtime.sessions, Channel().source(), DAY, lines)
    entries, after = count(runtime, LedgerEntry), ledger(runtime)
    again = reconcile(runtime.sessions, Channel().source(), DAY, lines)
    known = reconcile(runtime.sessions, Channel().source(), DAY, iter(()), digest=file_digest(lines))
    assert again.run_id == known.run_id == first.run_id and again.reused and known.reused
    assert count(runtime, ReconRun) == 1 and count(runtime, ReconItem) == 2
    assert count(runtime, LedgerEntry) == entries and ledger(runtime) == after
    # A corrected file of the same day is a new run; what was parked stays parked once.
    fixed = reconcile(runtime.sessions, Channel().source(), DAY, [*lines, b"payment,SOother,T9,1.00,\n"])
    assert fixed.run_id != first.run_id and not fixed.reused
    # (the unknown charge and the ours-only `extra` cancel out in suspense: +AMOUNT and -AMOUNT)
    assert after.get(SUSPENSE, 0) == 0 and ledger(runtime)[SUSPENSE] == 100 and extra


def test_an_interrupted_run_resumes_its_resolution(runtime: Runtime) -> None:
    order_no = new_order(runtime)
    lines = statement(pay(order_no))
    flaky = Channel()

    def crash(_order_no: str) -> ChannelTrade:
        raise RuntimeError("the process dies while asking the channel")

    with pytest.raises(RuntimeError):
        reconcile(runtime.sessions, StatementSource(CH, parse_lines, crash), DAY, lines)
    with unit_of_work(runtime.sessions) as db:
        assert db.scalar(sa.select(ReconRun.status)) == "matched"
    flaky.trades = {order_no: paid_trade(order_no)}
    again = reconcile(runtime.sessions, flaky.source(), DAY, lines)
    assert again.reused and state(runtime, order_no) == "paid"
    assert run_report(runtime, again.run_id)["status"] == "resolved"


@pytest.mark.parametrize(
    ("bad", "line"),
    [
        (b"payment,SOx,Tx,12.345,\n", 3),
        (b"garbage\n", 3),
        (b"payment,SOx,Tx,-1.00,\n", 3),
        (b"refund,SOx,Tx,1.00,\n", 3),
    ],
)
def test_a_malformed_file_is_refused_whole(runtime: Runtime, bad: bytes, line: int) -> None:
    order_no = paid_order(runtime)
    before = ledger(runtime)
    lines = [*statement(pay(order_no)), bad, *statement(pay("SOunknown"))[1:]]
    with pytest.raises(StatementError) as refused:
        reconcile(runtime.sessions, Channel().source(), DAY, lines)
    assert refused.value.line_no == line
    assert count(runtime, ReconRun) == count(runtime, ReconItem) == 0 and ledger(runtime) == before
    # the file fixed afterwards imports normally (nothing was left staged)
    assert reconcile(runtime.sessions, Channel().source(), DAY, statement(pay(order_no))).lines == 1


def test_a_day_with_nothing(runtime: Runtime) -> None:
    paid_order(runtime, at=ON_DAY - timedelta(days=1))
    done = reconcile(runtime.sessions, Channel().source(), DAY, statement())
    result = run_report(runtime, done.run_id)
    assert result["lines"] == 0 and result["items"] == [] and result["status"] == "resolved"
    assert all(v["count"] == 0 for kind in result["totals"].values() for v in kind.values())


def test_refund_lines_match_refunds_in_flight_but_not_failed_or_another_channels(runtime: Runtime) -> None:
    order_no, other = paid_order(runtime), new_order(runtime, channel="alipay")
    with unit_of_work(runtime.sessions) as db:
        accounting.request_refund(db, order_no, "RQ", 1000)  # sent, success not heard yet: a timing difference
        accounting.request_refund(db, order_no, "RF", 2000)
        accounting.refund_failed(db, "RF")
    lines = statement(pay(order_no), ref(order_no, "RQ", 1000), ref(order_no, "RF", 2000), pay(other))
    done = reconcile(runtime.sessions, Channel().source(), DAY, lines)
    result = run_report(runtime, done.run_id)
    assert result["totals"]["refund"]["matched"]["count"] == 1
    assert items(result) == {
        ("refund", "channel_only", order_no): ("parked", f"recon:{CH}:2026-11-27:refund:RF"),
        ("payment", "channel_only", other): ("parked", f"recon:{CH}:2026-11-27:payment:T{other}"),
    }


def test_thousands_of_lines(runtime: Runtime) -> None:
    n = 4000
    rows = [
        {
            "order_no": f"SO{i:024d}",
            "payer_kind": "citizen",
            "payer": "s1",
            "insured_ssn": "110105199003072813",
            "insurance_type": "pension",
            "periods": ["2025"],
            "amount_fen": AMOUNT,
            "region": "110000",
            "channel": CH,
            "state": "paid",
            "refund_reserved_fen": 0,
            "refunded_fen": 0,
            "paid_at": ON_DAY,
        }
        for i in range(n)
    ]
    with unit_of_work(runtime.sessions) as db:
        db.execute(sa.insert(PaymentOrder), rows)
    lines = statement(*(pay(f"SO{i:024d}", AMOUNT + (1 if i == 77 else 0)) for i in range(n) if i != 1234))
    done = reconcile(runtime.sessions, StatementSource(CH, parse_lines), DAY, lines, batch=500)
    result = run_report(runtime, done.run_id)
    assert result["lines"] == n - 1
    assert result["totals"]["payment"]["matched"]["count"] == n - 2
    assert {(i["category"], i["order_no"], i["line_no"]) for i in result["items"]} == {
        ("amount_mismatch", f"SO{77:024d}", 79),
        ("ours_only", f"SO{1234:024d}", None),
    }


# --- the commands, with a WeChat Pay trade bill ----------------------------------------------------------------------


def wechat_bill(path: Path, rows: list[tuple[str, int]]) -> None:
    from payments.channels.wechatpay_bill import BillRow, render

    bill = render(BillRow(ON_DAY, f"42000{i:023d}", order_no, amount) for i, (order_no, amount) in enumerate(rows))
    path.write_bytes(b"".join(bill))


def test_reconcile_command_with_a_wechat_bill(
    cli_env: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runtime = cli_env
    matched, missing = paid_order(runtime), paid_order(runtime)
    bill = tmp_path / "bill.csv"
    wechat_bill(bill, [(matched, AMOUNT), ("SOunknown", 2500)])
    argv = ["payments", "reconcile", "--channel", CH, "--date", "2026-11-27", "--file", str(bill)]
    assert main(argv) == 1  # parked items wait for review
    out = json.loads(capsys.readouterr().out)
    assert out["lines"] == 2 and not out["reused"] and out["totals"]["payment"]["matched"]["count"] == 1
    assert {(i["category"], i["order_no"], i["line_no"]) for i in out["items"]} == {
        ("channel_only", "SOunknown", 3),  # line 1 is the header
        ("ours_only", missing, None),
    }
    # no channel configured: nothing is asked, everything is parked (an unknown order needs no query anyway)
    assert {(i["order_no"], i["resolution"], i["note"]) for i in out["items"]} == {
        ("SOunknown", "parked", None),
        (missing, "parked", "no channel query configured"),
    }
    assert main(argv) == 1
    again = json.loads(capsys.readouterr().out)
    assert again["reused"] and again["run_id"] == out["run_id"]
    assert main(["payments", "reconcile-report", "--channel", CH, "--date", "2026-11-27"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["run_id"] == out["run_id"] and shown["items"] == out["items"]
    assert main(["payments", "reconcile-report", "--run", str(out["run_id"] + 1)]) == 1
    assert ledger(runtime)[SUSPENSE] == 2500 - AMOUNT


def test_reconcile_command_refuses_a_bad_bill_whole(
    cli_env: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    order_no = paid_order(cli_env)
    bill = tmp_path / "bill.csv"
    wechat_bill(bill, [(order_no, AMOUNT), ("SOother", 100)])
    lines = bill.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"`1.00,", b"`1.0,", 1)  # the second detail line's amount
    bill.write_bytes(b"".join(lines))
    argv = ["payments", "reconcile", "--channel", CH, "--date", "2026-11-27", "--file", str(bill)]
    assert main(argv) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["error"] == "statement_refused" and out["line"] == 3
    assert count(cli_env, ReconRun) == 0 and count(cli_env, ReconItem) == 0
    assert main(["payments", "reconcile", "--channel", "nowhere", "--date", "2026-11-27", "--file", str(bill)]) == 1
    missing = ["payments", "reconcile", "--channel", CH, "--date", "2026-11-27", "--file", str(tmp_path / "none")]
    assert main(missing) == 1


def test_the_same_file_imported_concurrently_is_one_run(runtime: Runtime) -> None:
    order_no = new_order(runtime)
    lines = statement(pay(order_no), pay("SOunknown"))
    channel = Channel({order_no: paid_trade(order_no)})
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(reconcile(runtime.sessions, channel.source(), DAY, lines).run_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and count(runtime, ReconRun) == 1
    assert state(runtime, order_no) == "paid"
    assert ledger(runtime) == {CLEARING: 2 * AMOUNT, FUND: AMOUNT, SUSPENSE: AMOUNT}


def _rendered(channel: str, lines: list[StatementLine]) -> list[bytes]:
    """The statement in the channel's own file format, as its parser reads it."""
    if channel == "wechatpay":
        from payments.channels import wechatpay_bill as wx_bill

        rows = (wx_bill.BillRow(ON_DAY, line.channel_trade_no, line.order_no, line.amount_fen) for line in lines)
        return list(wx_bill.render(rows))
    if channel == "alipay":
        from payments.channels import alipay_bill

        ali_rows = [
            alipay_bill.BillRow(LineKind.PAYMENT, line.channel_trade_no, line.order_no, line.amount_fen, ON_DAY, ON_DAY)
            for line in lines
        ]
        return list(alipay_bill.render(ali_rows, day=DAY))
    from payments.channels import bank

    return bank.render_statement("M0001", DAY, lines).splitlines(keepends=True)


@pytest.mark.parametrize("channel", ["wechatpay", "alipay", "bank"])
def test_each_channels_statement_format(runtime: Runtime, channel: str) -> None:
    from payments.reconciliation.sources import parser_for

    matched = new_order(runtime, channel)
    with unit_of_work(runtime.sessions) as db:
        accounting.mark_paid(db, matched, amount_fen=AMOUNT)
        db.execute(sa.update(PaymentOrder).where(PaymentOrder.order_no == matched).values(paid_at=ON_DAY))
    lines = [
        StatementLine(1, LineKind.PAYMENT, matched, "4200000000000000000000000001", AMOUNT, ON_DAY),
        StatementLine(2, LineKind.PAYMENT, "SOunknown0001", "4200000000000000000000000002", 700, ON_DAY),
    ]
    done = reconcile(runtime.sessions, StatementSource(channel, parser_for(channel)), DAY, _rendered(channel, lines))
    result = run_report(runtime, done.run_id)
    assert result["totals"]["payment"]["matched"]["count"] == 1
    (item,) = result["items"]
    assert (item["category"], item["order_no"], item["statement_fen"]) == ("channel_only", "SOunknown0001", 700)
    assert item["channel_trade_no"] == "4200000000000000000000000002" and item["resolution"] == "parked"


def test_a_parked_charge_whose_callback_comes_later_is_not_counted_twice(runtime: Runtime) -> None:
    unpaid, closed = new_order(runtime), new_order(runtime)
    with unit_of_work(runtime.sessions) as db:
        accounting.close(db, closed)
    lines = statement(pay(unpaid), pay(closed))
    first = reconcile(runtime.sessions, Channel(down=True).source(), DAY, lines)
    assert {i["resolution"] for i in run_report(runtime, first.run_id)["items"]} == {"parked"}
    assert ledger(runtime) == {CLEARING: 2 * AMOUNT, SUSPENSE: 2 * AMOUNT}
    # The callbacks arrive after the statement: one pays its order, the other is held (the order was closed).
    for order_no in (unpaid, closed):
        tid = f"T{order_no}"
        event = ChannelEvent(CH, f"{tid}:SUCCESS", order_no, tid, "SUCCESS", Kind.PAID, AMOUNT, "CNY", {})
        with unit_of_work(runtime.sessions) as db:
            inbox.receive(db, event)
    with unit_of_work(runtime.sessions) as db:  # on the statement's day, not the test's clock
        db.execute(sa.update(PaymentOrder).where(PaymentOrder.order_no == unpaid).values(paid_at=ON_DAY))
    assert ledger(runtime) == {CLEARING: 4 * AMOUNT, FUND: AMOUNT, SUSPENSE: 3 * AMOUNT}  # counted twice for now
    # The next reconciliation (here the same file again) undoes those parkings.
    again = reconcile(runtime.sessions, Channel().source(), DAY, lines)
    assert again.reused and ledger(runtime) == {CLEARING: 2 * AMOUNT, FUND: AMOUNT, SUSPENSE: AMOUNT}
    resolved = {i["order_no"]: (i["resolution"], i["ledger_key"]) for i in run_report(runtime, first.run_id)["items"]}
    key = f"recon:{CH}:2026-11-27:payment:T{unpaid}:undone"
    assert resolved[unpaid] == ("matched_late", key)
    assert resolved[closed][0] == "held_by_callback" and resolved[closed][1].startswith("callback:")
    reconcile(runtime.sessions, Channel().source(), DAY + timedelta(days=1), statement())
    assert ledger(runtime) == {CLEARING: 2 * AMOUNT, FUND: AMOUNT, SUSPENSE: AMOUNT}  # undone once only


def test_an_ours_only_refund_the_channel_confirms_is_matched_late(runtime: Runtime) -> None:
    confirmed, processing = paid_order(runtime), paid_order(runtime)
    refunded(runtime, confirmed, "RC", 1000)
    refunded(runtime, processing, "RP", 2000)
    before = ledger(runtime)
    channel = Channel(
        refunds={
            "RC": RefundStatus("RC", RefundOutcome.SUCCEEDED, 1000, "50300", "SUCCESS"),
            "RP": RefundStatus("RP", RefundOutcome.PROCESSING, 2000, "50301", "PROCESSING"),
        }
    )
    done = reconcile(runtime.sessions, channel.source(), DAY, statement(pay(confirmed), pay(processing)))
    result = run_report(runtime, done.run_id)
    resolved = {i["refund_no"]: (i["category"], i["resolution"], i["note"]) for i in result["items"]}
    assert resolved == {
        "RC": ("ours_only", "matched_late", "the channel confirms the refund: on another day's statement"),
        "RP": ("ours_only", "parked", "the channel reports the refund processing (PROCESSING), 2000 fen"),
    }
    assert sorted(channel.asked_refunds) == ["RC", "RP"] and channel.asked == []
    # only the refund the channel does not confirm moved: clearing back up by its amount, held in suspense
    assert ledger(runtime) == {**before, CLEARING: before[CLEARING] + 2000, SUSPENSE: 2000}
