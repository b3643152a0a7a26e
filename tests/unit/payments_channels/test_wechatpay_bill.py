"""The WeChat Pay trade bill (ALL): a bill written out by hand from the format description, every way a file can be
wrong (each a StatementError naming its line), rendering, round trips and fuzzing (only StatementError may come
out)."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payments.channels.base import LineKind, StatementError
from payments.channels.wechatpay_bill import CHINA, HEADER, SUMMARY_HEADER, BillRow, parse, render

# Written out by hand, not rendered: the header and summary header of the format description, a backtick before
# every field, CRLF line ends, a BOM, a payment and a refund of it (the refund's fee is returned, negative).
PAY = (
    "`2026-11-27 09:15:02,`wxd678efh567hg6787,`1900000109,`0,`,`4200002026112712345678901234,`SO0123456789abcdef01,"
    "`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`SUCCESS,`OTHERS,`CNY,`120.00,`0.00,`,`,`0.00,`0.00,`,`,"
    "`城乡居民养老保险,`,`0.72,`0.60%,`120.00,`0.00,`"
)
REFUND = (
    "`2026-11-27 15:40:00,`wxd678efh567hg6787,`1900000109,`0,`,`4200002026112712345678901234,`SO0123456789abcdef01,"
    "`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`50000002026112700000000001,`RF01,"
    "`20.50,`0.00,`ORIGINAL,`SUCCESS,`城乡居民养老保险,`,`-0.12,`0.60%,`0.00,`20.50,`"
)
SUMMARY = "`2,`120.00,`20.50,`0.00,`0.60,`120.00,`20.50"


def bill(*details: str, summary: str = SUMMARY, bom: bool = True) -> list[bytes]:
    lines = [("\ufeff" if bom else "") + HEADER, *details, SUMMARY_HEADER, summary]
    return [(line + "\r\n").encode() for line in lines]


def test_a_hand_written_bill_is_read() -> None:
    pay, refund = parse(bill(PAY, REFUND))
    assert pay.kind is LineKind.PAYMENT and refund.kind is LineKind.REFUND
    assert (pay.line_no, pay.order_no, pay.channel_trade_no, pay.amount_fen) == (
        2,
        "SO0123456789abcdef01",
        "4200002026112712345678901234",
        12000,
    )
    assert pay.occurred_at == datetime.datetime(2026, 11, 27, 1, 15, 2, tzinfo=datetime.UTC)  # China time in the file
    assert (refund.line_no, refund.amount_fen, refund.refund_no, refund.channel_refund_no) == (
        3,
        2050,
        "RF01",
        "50000002026112700000000001",
    )
    assert pay.refund_no is None


def test_without_bom_lf_only_and_as_one_bytes_object() -> None:
    expected = list(parse(bill(PAY, REFUND)))
    assert list(parse(bill(PAY, REFUND, bom=False))) == expected
    assert list(parse([line.replace(b"\r\n", b"\n") for line in bill(PAY, REFUND)])) == expected
    assert list(parse(b"".join(bill(PAY, REFUND)))) == expected
    assert list(parse([line.rstrip(b"\r\n") for line in bill(PAY, REFUND)])) == expected


def test_an_empty_day_and_trailing_blank_lines() -> None:
    assert list(parse([*bill(summary="`0,`0.00,`0.00,`0.00,`0.00,`0.00,`0.00"), b"\r\n", b""])) == []


def _refused(lines: list[bytes]) -> StatementError:
    with pytest.raises(StatementError) as e:
        list(parse(lines))
    return e.value


def _swap(line: str, index: int, value: str) -> str:
    fields = line.split(",")
    fields[index] = value
    return ",".join(fields)


@pytest.mark.parametrize(
    ("detail", "why"),
    [
        (PAY.replace("`", "", 1), "backtick"),
        (PAY.replace(",`CNY", ",CNY"), "backtick"),
        (PAY + ",`", "fields"),
        (PAY.rsplit(",", 1)[0], "fields"),
        (PAY.replace("城乡居民养老保险", "养老,保险"), "fields"),  # a comma in a field shifts every column
        (_swap(PAY, 0, "`2026-11-27T09:15:02"), "交易时间"),
        (_swap(PAY, 0, "`2026-02-30 09:15:02"), "交易时间"),
        (_swap(PAY, 0, "`２026-11-27 09:15:02"), "交易时间"),
        (_swap(PAY, 5, "`"), "微信订单号"),
        (_swap(PAY, 6, "`SO 1"), "商户订单号"),
        (_swap(PAY, 9, "`REVOKED"), "交易状态"),
        (_swap(PAY, 9, "`success"), "交易状态"),
        (_swap(PAY, 11, "`USD"), "货币种类"),
        (_swap(PAY, 24, "`120.0"), "订单金额"),
        (_swap(PAY, 24, "`1.2e2"), "订单金额"),
        (_swap(PAY, 24, "`0120.00"), "订单金额"),
        (_swap(PAY, 24, "`-120.00"), "订单金额"),
        (_swap(PAY, 24, "`１２０.00"), "订单金额"),
        (_swap(PAY, 24, "`99999999999.00"), "订单金额"),
        (_swap(PAY, 24, "`0.00"), "positive"),
        (_swap(PAY, 12, "`130.00"), "positive"),  # settled more than ordered
        (_swap(PAY, 22, "`-0.00"), "手续费"),
        (_swap(PAY, 16, "`1.00"), "refund fields"),
        (_swap(PAY, 15, "`RF01"), "refund fields"),
        (_swap(REFUND, 14, "`"), "退款单号"),
        (_swap(REFUND, 15, "`RF 01"), "退款单号"),
        (_swap(REFUND, 16, "`0.00"), "退款金额"),
        (_swap(REFUND, 25, "`20.49"), "退款金额"),  # refunded more than asked
        (_swap(REFUND, 19, "`"), "退款状态"),
    ],
)
def test_malformed_detail_lines_are_refused_with_their_line_number(detail: str, why: str) -> None:
    error = _refused(bill(PAY, detail))
    assert error.line_no == 3 and why in str(error)


@pytest.mark.parametrize(
    "summary",
    [
        "`1,`120.00,`20.50,`0.00,`0.60,`120.00,`20.50",  # count
        "`2,`120.01,`20.50,`0.00,`0.60,`120.00,`20.50",  # 应结订单总金额
        "`2,`120.00,`20.49,`0.00,`0.60,`120.00,`20.50",  # 退款总金额
        "`2,`120.00,`20.50,`0.01,`0.60,`120.00,`20.50",  # 充值券退款总金额
        "`2,`120.00,`20.50,`0.00,`0.84,`120.00,`20.50",  # 手续费总金额 (the refund's fee not subtracted)
        "`2,`120.00,`20.50,`0.00,`0.60,`121.00,`20.50",  # 订单总金额
        "`2,`120.00,`20.50,`0.00,`0.60,`120.00,`0.00",  # 申请退款总金额
        "`02,`120.00,`20.50,`0.00,`0.60,`120.00,`20.50",
        "`2,`120.00,`20.50,`0.00,`0.60,`120.00",
        "2,`120.00,`20.50,`0.00,`0.60,`120.00,`20.50",
    ],
)
def test_a_summary_that_disagrees_is_refused_at_its_line(summary: str) -> None:
    assert _refused(bill(PAY, REFUND, summary=summary)).line_no == 5


@pytest.mark.parametrize(
    ("lines", "line_no"),
    [
        ([], 0),
        ([b"\xef\xbb\xbf" + HEADER.encode()], 1),  # no summary
        (bill(PAY, REFUND)[:3], 3),  # cut before the summary header
        (bill(PAY, REFUND)[:4], 4),  # cut before the summary line
        ([HEADER.replace("商户号", "商户").encode(), *bill(PAY, REFUND)[1:]], 1),
        ([b"\xef\xbb\xbf\xef\xbb\xbf" + HEADER.encode(), *bill(PAY, REFUND)[1:]], 1),
        ([*bill(PAY, REFUND), b"`more"], 6),
        ([bill(PAY)[0], b"\xff\xfe" + PAY.encode(), *bill(PAY)[2:]], 2),
        ([bill(PAY)[0], PAY.encode().replace(b"NATIVE", b"NAT\nIVE"), *bill(PAY)[2:]], 2),
        ([bill(PAY)[0], PAY.encode().replace(b"NATIVE", b"NAT\rIVE"), *bill(PAY)[2:]], 2),
    ],
)
def test_files_that_are_not_a_whole_bill_are_refused(lines: list[bytes], line_no: int) -> None:
    assert _refused(lines).line_no == line_no


def test_a_line_that_is_not_bytes_is_refused() -> None:
    assert _refused([HEADER]).line_no == 1  # type: ignore[list-item]


def test_parsing_streams() -> None:
    # The first statement line comes out after reading two lines, not the whole file.
    read: list[int] = []

    def lines() -> Iterator[bytes]:
        for i, line in enumerate(bill(PAY, REFUND)):
            read.append(i)
            yield line

    first = next(parse(lines()))
    assert first.line_no == 2 and read == [0, 1]


# --- rendering ---------------------------------------------------------------------------------------------------

AT = datetime.datetime(2026, 11, 27, 1, 15, 2, tzinfo=datetime.UTC)


def test_render_writes_the_hand_written_bill() -> None:
    rows = [
        BillRow(
            AT,
            "4200002026112712345678901234",
            "SO0123456789abcdef01",
            12000,
            appid="wxd678efh567hg6787",
            mchid="1900000109",
            fee_fen=72,
            openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            description="城乡居民养老保险",
        ),
        BillRow(
            datetime.datetime(2026, 11, 27, 15, 40, tzinfo=CHINA),
            "4200002026112712345678901234",
            "SO0123456789abcdef01",
            2050,
            LineKind.REFUND,
            refund_id="50000002026112700000000001",
            out_refund_no="RF01",
            appid="wxd678efh567hg6787",
            mchid="1900000109",
            fee_fen=12,
            openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            description="城乡居民养老保险",
        ),
    ]
    assert list(render(rows)) == bill(PAY, REFUND)


@pytest.mark.parametrize(
    "row",
    [
        BillRow(AT, "42", "SO1,2", 100),
        BillRow(AT, "42", "SO12", 100, description="a\nb"),
        BillRow(AT, "42", "SO12", 0),
        BillRow(AT, "42", "SO12", -5),
    ],
)
def test_render_refuses_what_the_format_cannot_carry(row: BillRow) -> None:
    with pytest.raises(ValueError):
        list(render([row]))


_numbers = st.text("0123456789ABCDEFabcdef", min_size=1, max_size=32)
_rows = st.builds(
    BillRow,
    occurred_at=st.datetimes(
        min_value=datetime.datetime(2000, 1, 2), max_value=datetime.datetime(2099, 12, 30), timezones=st.just(CHINA)
    ).map(lambda d: d.replace(microsecond=0)),
    transaction_id=_numbers,
    out_trade_no=_numbers,
    amount_fen=st.integers(1, 10**11),
    kind=st.sampled_from(LineKind),
    refund_id=_numbers,
    out_refund_no=_numbers,
    fee_fen=st.integers(0, 10**6),
    description=st.text(st.characters(blacklist_characters=",\r\n`", blacklist_categories=("Cs",)), max_size=20),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_rows, max_size=20))
def test_render_then_parse_gives_back_the_rows(rows: list[BillRow]) -> None:
    lines = list(parse(render(rows)))
    assert [(x.kind, x.order_no, x.channel_trade_no, x.amount_fen, x.occurred_at) for x in lines] == [
        (r.kind, r.out_trade_no, r.transaction_id, r.amount_fen, r.occurred_at) for r in rows
    ]
    assert [(x.refund_no, x.channel_refund_no) for x in lines] == [
        (r.out_refund_no, r.refund_id) if r.kind is LineKind.REFUND else (None, None) for r in rows
    ]
    assert [x.line_no for x in lines] == list(range(2, len(rows) + 2))


# --- fuzzing: only StatementError ----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_fuzz_arbitrary_lines(lines: list[bytes]) -> None:
    with contextlib.suppress(StatementError):
        list(parse(lines))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_a_valid_bill_with_one_change(data: st.DataObject) -> None:
    lines = bill(PAY, REFUND)
    index = data.draw(st.integers(0, len(lines) - 1))
    line = lines[index]
    at = data.draw(st.integers(0, len(line)))
    cut = data.draw(st.integers(0, 3))
    lines[index] = line[:at] + data.draw(st.binary(max_size=4)) + line[at + cut :]
    with contextlib.suppress(StatementError):
        list(parse(lines))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([PAY, REFUND]), max_size=5), st.data())
def test_fuzz_fields_of_valid_lines(details: list[str], data: st.DataObject) -> None:
    changed = [
        _swap(d, data.draw(st.integers(0, 26)), "`" + data.draw(st.text(max_size=12).filter(lambda t: "," not in t)))
        for d in details
    ]
    with contextlib.suppress(StatementError):
        list(parse(bill(*changed)))
