"""Alipay's trade bill (业务明细): a file written by hand in Alipay's layout, every refusal with its line number,
the renderer read back, streaming in constant memory, and Hypothesis fuzzing (only StatementError may come out)."""

from __future__ import annotations

import contextlib
import itertools
import tracemalloc
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payments.channels import alipay_bill
from payments.channels.alipay import CHINA_TIME
from payments.channels.alipay_bill import BillRow, parse, render
from payments.channels.base import LineKind, StatementError

# As Alipay's console and download give it: a tab after text fields, refunds negative, GBK, CRLF.
SAMPLE = """#支付宝业务明细查询
#账号：[20881021196858380156]
#起始日期：[2026年11月28日 00:00:00]   终止日期：[2026年11月29日 00:00:00]
#-----------------------------------------业务明细列表----------------------------------------
支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注
2026112822001481071000123456\t,P20261128000000000123\t,交易\t,城乡居民养老保险 2026\t,2026-11-28 21:29:40,2026-11-28 21:29:59,\t,\t,\t,\t,csq***@sandbox.com\t,120.00,120.00,0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,\t,0.00,0.00,
2026112822001481071000123457\t,P20261128000000000124\t,交易\t,"灵活就业, 养老"\t,2026-11-28 22:00:00,2026-11-28 22:00:10,\t,\t,\t,\t,abc***@sandbox.com\t,1000.50,1000.50,0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,\t,0.00,0.00,备注
2026112822001481071000123456\t,P20261128000000000123\t,退款\t,城乡居民养老保险 2026\t,2026-11-28 21:29:40,2026-11-28 23:10:05,\t,\t,\t,\t,csq***@sandbox.com\t,-20.50,-20.50,0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,R20261128000000000001\t,0.00,0.00,
#-----------------------------------------业务明细列表结束------------------------------------
#交易合计：2笔，商家实收共1120.50元，商家优惠共0.00元
#退款合计：1笔，商家实收退款共-20.50元，商家优惠退款共0.00元
#导出时间：[2026年11月29日 09:13:31]
"""  # noqa: E501 - the file's own lines
ROW_LINES = (6, 7, 8)


def lines_of(text: str, encoding: str = "gbk", newline: str = "\r\n") -> list[bytes]:
    return [(line + newline).encode(encoding) for line in text.splitlines()]


def replaced(old: str, new: str) -> list[bytes]:
    assert old in SAMPLE
    return lines_of(SAMPLE.replace(old, new, 1))


def refused(lines: list[bytes], line_no: int | None = None) -> StatementError:
    with pytest.raises(StatementError) as e:
        list(parse(lines))
    if line_no is not None:
        assert e.value.line_no == line_no, e.value
    return e.value


@pytest.mark.parametrize(
    ("encoding", "newline"), [("gbk", "\r\n"), ("gbk", "\n"), ("utf-8", "\r\n"), ("utf-8-sig", "\n")]
)
def test_a_bill_written_by_hand_is_read(encoding: str, newline: str) -> None:
    data = "".join(line + newline for line in SAMPLE.splitlines()).encode(encoding)
    got = list(parse(data.splitlines(keepends=True)))
    assert [(x.line_no, x.kind, x.order_no, x.channel_trade_no, x.amount_fen, x.refund_no) for x in got] == [
        (6, LineKind.PAYMENT, "P20261128000000000123", "2026112822001481071000123456", 12000, None),
        (7, LineKind.PAYMENT, "P20261128000000000124", "2026112822001481071000123457", 100050, None),
        (8, LineKind.REFUND, "P20261128000000000123", "2026112822001481071000123456", 2050, "R20261128000000000001"),
    ]
    assert got[0].occurred_at == datetime(2026, 11, 28, 21, 29, 59, tzinfo=CHINA_TIME)
    assert all(type(x.amount_fen) is int and x.amount_fen > 0 for x in got)


def test_older_wording_and_ascii_parentheses_are_read() -> None:
    text = (
        SAMPLE.replace("商家实收（元）", "商家实收(元)")
        .replace("商家实收共1120.50元", "交易金额共1120.50元")
        .replace(
            "#退款合计：1笔，商家实收退款共-20.50元，商家优惠退款共0.00元", "#退款合计：1笔，交易退款金额共-20.50元"
        )
    )
    assert len(list(parse(lines_of(text)))) == 3


def test_columns_are_found_by_name() -> None:
    # A column added in front of the amounts moves them; the parser reads by header name, not position.
    header, *_ = (line for line in SAMPLE.splitlines() if line.startswith("支付宝交易号"))
    moved = SAMPLE.replace(header, header.replace("对方账户,", "对方账户,新列,")).replace(
        "sandbox.com\t,", "sandbox.com\t,x,"
    )
    assert [x.amount_fen for x in parse(lines_of(moved))] == [12000, 100050, 2050]


def test_a_bill_without_refunds_may_omit_their_total() -> None:
    lines = lines_of(SAMPLE)
    del lines[7]  # the refund row
    without = [line for line in lines if not line.startswith("#退款合计".encode("gbk"))]
    assert [x.kind for x in parse(without)] == [LineKind.PAYMENT, LineKind.PAYMENT]


# --- refusals, each with its line -------------------------------------------------------------------------------

FIELD_COUNT = 25


@pytest.mark.parametrize(
    ("old", "new", "line_no", "says"),
    [
        (",120.00,120.00,", ",120.00,", 6, "fields"),
        (",120.00,120.00,", ",120.00,120.001,", 6, "商家实收"),
        (",120.00,120.00,", ",120.00,1e2,", 6, "商家实收"),
        (",120.00,120.00,", ",120.00,-120.00,", 6, "payment"),
        (",120.00,120.00,", ",120.00,0.00,", 6, "payment"),
        (",-20.50,-20.50,", ",-20.50,20.50,", 8, "negative"),
        ("R20261128000000000001\t", "\t", 8, "退款批次号"),
        ("交易\t,城乡居民", "冻结\t,城乡居民", 6, "业务类型"),
        ("2026-11-28 21:29:59", "2026-11-28T21:29:59", 6, "完成时间"),
        ("2026-11-28 21:29:59", "2026-11-31 21:29:59", 6, "完成时间"),
        ("2026-11-28 21:29:59", "2026-11-28 21:29", 6, "完成时间"),
        (
            "2026112822001481071000123456\t,P20261128000000000123\t,交易",
            "\t,P20261128000000000123\t,交易",
            6,
            "支付宝交易号",
        ),
        ('"灵活就业, 养老"', '"灵活就业, 养老', 7, "fields"),
        ("支付宝交易号,商户订单号", "交易号,商户订单号", 5, "header"),
        ("商家实收（元）,", "实收（元）,", 5, "商家实收"),
        ("门店编号,门店名称", "门店编号,门店编号", 5, "unique"),
        ("#交易合计：2笔", "#交易合计：3笔", 10, "交易合计"),
        ("商家实收共1120.50元", "商家实收共1120.51元", 10, "交易合计"),
        ("商家实收退款共-20.50元", "商家实收退款共-20.00元", 11, "退款合计"),
        ("商家实收退款共-20.50元", "商家实收退款共20.50元", 11, "sign"),
        ("#退款合计：1笔，商家实收退款共-20.50元，商家优惠退款共0.00元", "#退款", 13, "退款合计"),
        ("#交易合计：2笔，商家实收共1120.50元，商家优惠共0.00元", "#交易", 13, "交易合计"),
        ("#导出时间", "#交易合计：2笔，商家实收共1120.50元\n#导出时间", 12, "repeated"),
    ],
)
def test_malformed_lines_and_wrong_totals_are_refused(old: str, new: str, line_no: int, says: str) -> None:
    error = refused(replaced(old, new), line_no)
    assert says in str(error) and str(error).startswith(f"line {line_no}:")


def test_a_row_after_the_totals_is_refused() -> None:
    lines = lines_of(SAMPLE)
    refused([*lines, lines[5]], 13)


def test_a_truncated_file_is_refused() -> None:
    lines = lines_of(SAMPLE)
    for cut in (0, 4, 5, 7, 9, 10):  # anywhere before the payment total
        refused(lines[:cut], cut + 1)


def test_a_line_of_another_encoding_is_refused() -> None:
    lines = lines_of(SAMPLE)
    lines[6] = lines[6].replace("灵活就业".encode("gbk"), "灵活就业".encode())  # UTF-8 inside a GBK file
    lines[6] = lines[6][:60] + b"\x80\xff" + lines[6][62:]
    refused(lines, 7)


def test_a_huge_line_is_refused() -> None:
    lines = lines_of(SAMPLE)
    lines.insert(1, b"#" + b"x" * 10_000 + b"\r\n")
    refused(lines, 2)


# --- the renderer, read back ------------------------------------------------------------------------------------

_moment = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)).map(
    lambda d: d.replace(microsecond=0, tzinfo=CHINA_TIME)
)
_id = st.text(alphabet="0123456789ABCDEFGHJKLMNPQRSTUVWXYZ-_", min_size=1, max_size=32)
_row = st.builds(
    BillRow,
    kind=st.sampled_from(LineKind),
    trade_no=_id,
    order_no=_id,
    amount_fen=st.integers(1, 10**11),
    created_at=_moment,
    finished_at=_moment,
    subject=st.text(alphabet=st.sampled_from('养老保险, "ab12'), max_size=20),
    refund_no=_id,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_row, max_size=30), st.sampled_from(["gbk", "utf-8"]))
def test_rendered_bills_read_back(rows: list[BillRow], encoding: str) -> None:
    got = list(parse(render(rows, encoding=encoding)))
    assert [(x.kind, x.channel_trade_no, x.order_no, x.amount_fen, x.occurred_at) for x in got] == [
        (r.kind, r.trade_no, r.order_no, r.amount_fen, r.finished_at) for r in rows
    ]
    assert [x.refund_no for x in got] == [r.refund_no if r.kind is LineKind.REFUND else None for r in rows]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_row, min_size=1, max_size=10), st.data())
def test_any_changed_amount_or_dropped_row_is_caught(rows: list[BillRow], data: st.DataObject) -> None:
    lines = list(render(rows))
    index = data.draw(st.integers(5, 5 + len(rows) - 1))
    if data.draw(st.booleans()):
        del lines[index]
    else:
        row = rows[index - 5]
        delta = data.draw(st.sampled_from([-1, 1, 100]))
        if row.amount_fen + delta <= 0:
            delta = 1
        changed = BillRow(row.kind, row.trade_no, row.order_no, row.amount_fen + delta, row.created_at, row.finished_at)
        lines[index] = list(render([changed]))[5]
    with pytest.raises(StatementError):
        list(parse(lines))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_fuzz_only_statement_errors(lines: list[bytes]) -> None:
    with contextlib.suppress(StatementError):
        list(parse(lines))


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 11), st.binary(max_size=60), st.integers(0, 300))
def test_fuzz_a_real_bill_with_one_line_damaged(index: int, noise: bytes, at: int) -> None:
    lines = lines_of(SAMPLE)
    lines[index] = lines[index][:at] + noise + lines[index][at:]
    try:
        for line in parse(lines):
            assert line.amount_fen > 0
    except StatementError:
        pass


# --- streaming --------------------------------------------------------------------------------------------------


def _rows(count: int) -> Iterator[BillRow]:
    start = datetime(2026, 11, 28, tzinfo=CHINA_TIME)
    for i in range(count):
        moment = start + timedelta(seconds=i // 10)
        yield BillRow(LineKind.PAYMENT, f"2026112822001{i:015d}", f"P{i:020d}", 12000, moment, moment, "养老")


def test_lines_come_out_before_the_file_is_read() -> None:
    def endless() -> Iterator[bytes]:
        yield from itertools.islice(render(_rows(10)), 6)
        while True:
            yield next(iter(render(_rows(1))))  # never a total: only streaming lets this end
            raise AssertionError("read past the first row")  # pragma: no cover

    first = next(parse(endless()))
    assert (first.line_no, first.order_no) == (6, "P00000000000000000000")


def test_memory_stays_flat_over_a_long_file() -> None:
    tracemalloc.start()
    try:
        count = sum(1 for _ in parse(render(_rows(30_000))))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 30_000
    assert peak < 256 * 1024  # a list of 30,000 lines alone would take several megabytes


def test_module_constants_match_the_header() -> None:
    assert len(alipay_bill.HEADER) == FIELD_COUNT
    assert alipay_bill.END_MARKER.startswith("#")


def test_many_distinct_amounts_are_each_read() -> None:
    # More distinct amounts than the parser's bounded amount cache holds.
    moment = datetime(2026, 11, 28, tzinfo=CHINA_TIME)
    rows = [BillRow(LineKind.PAYMENT, f"T{i}", f"P{i}", 100 + i, moment, moment) for i in range(5000)]
    assert [x.amount_fen for x in parse(render(rows))] == [100 + i for i in range(5000)]
