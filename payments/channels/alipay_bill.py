"""Alipay's daily trade bill (业务明细, bill_type=trade): streaming parser and renderer.

Reference: Alipay open platform, alipay.data.dataservice.bill.downloadurl.query and the layout of the downloaded
"<pid>_<yyyyMMdd>_业务明细.csv" (GBK): '#' comment lines, the column header, one row per money movement (业务类型
交易 for a payment, 退款 for a refund with negative amounts), an end marker and the totals
"#交易合计：N笔，商家实收共X元，..." / "#退款合计：N笔，商家实收退款共-X元，...". Alipay writes a tab after text fields
(so spreadsheets keep long numbers as text); fields are stripped.

`parse` reads an iterable of raw lines (a file object, a download stream) and holds only running totals, so a
million-line file streams in constant memory. A file that is not this layout, or whose totals disagree with its rows,
raises StatementError naming the line: a bill that does not add up is never partly imported.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime

from payments.channels.alipay import CHINA_TIME
from payments.channels.base import LineKind, StatementError, StatementLine
from payments.money import MoneyError, format_yuan, parse_yuan

HEADER = (
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "创建时间",
    "完成时间",
    "门店编号",
    "门店名称",
    "操作员",
    "终端号",
    "对方账户",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝红包（元）",
    "集分宝（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "券核销金额（元）",
    "券名称",
    "商家红包消费金额（元）",
    "卡消费金额（元）",
    "退款批次号/请求号",
    "服务费（元）",
    "分润（元）",
    "备注",
)
PAYMENT, REFUND = "交易", "退款"
END_MARKER = "#-----------------------------------------业务明细列表结束------------------------------------"
_START_MARKER = "#-----------------------------------------业务明细列表----------------------------------------"
_PAYMENT_TOTAL = re.compile(r"#交易合计：(\d+)笔，(?:商家实收|交易金额)共(-?[0-9.]+)元")
_REFUND_TOTAL = re.compile(r"#退款合计：(\d+)笔，(?:商家实收退款|交易退款金额|退款)共(-?[0-9.]+)元")
_MAX_LINE = 8192
_AMOUNT_CACHE = 4096
# The columns we read, by their header name (fullwidth parentheses as Alipay writes them, ASCII ones accepted).
_TRADE_NO, _ORDER_NO, _TYPE, _FINISHED, _NET, _REFUND_NO = (
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "完成时间",
    "商家实收（元）",
    "退款批次号/请求号",
)


def _column_name(text: str) -> str:
    return text.strip().replace("(", "（").replace(")", "）")


class _Decoder:
    """UTF-8 (with or without a BOM) or GBK, decided by the first line that is not ASCII and kept for the file."""

    def __init__(self) -> None:
        self.encoding: str | None = None

    def __call__(self, raw: bytes, line_no: int) -> str:
        if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw, self.encoding = raw[3:], "utf-8"
        if self.encoding is None:
            if raw.isascii():
                return raw.decode("ascii")
            try:
                text = raw.decode("utf-8")
                self.encoding = "utf-8"
                return text
            except UnicodeDecodeError:
                self.encoding = "gb18030"  # a superset of GBK, as Alipay ships it
        try:
            return raw.decode(self.encoding)
        except UnicodeDecodeError:
            raise StatementError(line_no, f"not {self.encoding} like the lines before it") from None


def _yuan(text: str, line_no: int, name: str) -> int:
    try:
        return parse_yuan(text, signed=True)
    except MoneyError:
        raise StatementError(line_no, f"{name} is not a yuan amount") from None


def _time(text: str, line_no: int, last: list[object]) -> datetime:
    # A busy day's rows share their seconds: the last one is remembered (`last` is [text, datetime]).
    if last[0] == text:
        return last[1]  # type: ignore[return-value]
    # fromisoformat is an order of magnitude faster than strptime; the shape check keeps it to Alipay's one form.
    if len(text) != 19 or text[10] != " " or not text.isascii():
        raise StatementError(line_no, "完成时间 is not yyyy-MM-dd HH:mm:ss")
    try:
        moment = datetime.fromisoformat(text).replace(tzinfo=CHINA_TIME)
    except ValueError:
        raise StatementError(line_no, "完成时间 is not a valid time") from None
    last[:] = [text, moment]
    return moment


def _fields(text: str, line_no: int) -> list[str]:
    if '"' not in text:
        return text.split(",")
    # Not strict: Alipay's tab after a text field follows the closing quote too. An unbalanced quote swallows the
    # rest of the line, which the field count then refuses.
    try:
        return next(csv.reader([text]))
    except (csv.Error, StopIteration):
        raise StatementError(line_no, "badly quoted field") from None


def parse(lines: Iterable[bytes]) -> Iterator[StatementLine]:
    """The payments and refunds of a trade bill, in file order; StatementError for anything else."""
    decode = _Decoder()
    columns: dict[str, int] | None = None
    width = 0
    in_footer = False
    counts = {LineKind.PAYMENT: 0, LineKind.REFUND: 0}
    sums = {LineKind.PAYMENT: 0, LineKind.REFUND: 0}
    totals: dict[LineKind, tuple[int, int, int]] = {}  # count, fen, the line saying so
    last_time: list[object] = [None, None]
    # A day's contributions come in few distinct amounts (the tiers): parsed once each, in a bounded cache.
    amounts: dict[str, int] = {}
    line_no = 0
    for line_no, raw in enumerate(lines, 1):
        if len(raw) > _MAX_LINE:
            raise StatementError(line_no, "line too long")
        text = decode(raw.rstrip(b"\r\n"), line_no)
        if not text.strip():
            continue
        if text.startswith("#"):
            if columns is not None:
                in_footer = True
                _read_total(text, line_no, totals)
            continue
        if columns is None:
            names = [_column_name(name) for name in _fields(text, line_no)]
            if names[:1] != [_TRADE_NO]:
                raise StatementError(line_no, "expected the 支付宝交易号 column header")
            missing = [n for n in (_ORDER_NO, _TYPE, _FINISHED, _NET, _REFUND_NO) if n not in names]
            if missing or len(set(names)) != len(names):
                raise StatementError(line_no, f"column header lacks {', '.join(missing) or 'unique names'}")
            columns, width = {name: i for i, name in enumerate(names)}, len(names)
            i_trade, i_order, i_type = columns[_TRADE_NO], columns[_ORDER_NO], columns[_TYPE]
            i_finished, i_net, i_refund = columns[_FINISHED], columns[_NET], columns[_REFUND_NO]
            continue
        if in_footer:
            raise StatementError(line_no, "a row after the totals")
        fields = _fields(text, line_no)
        if len(fields) != width:
            raise StatementError(line_no, f"{len(fields)} fields, the header has {width}")
        trade_no, order_no = fields[i_trade].strip(), fields[i_order].strip()
        if not trade_no or not order_no or len(trade_no) > 64 or len(order_no) > 64:
            raise StatementError(line_no, "支付宝交易号 or 商户订单号 missing")
        kind_text = fields[i_type].strip()
        net = fields[i_net].strip()
        amount = amounts.get(net)
        if amount is None:
            amount = _yuan(net, line_no, "商家实收")
            if len(amounts) >= _AMOUNT_CACHE:
                amounts.clear()
            amounts[net] = amount
        refund_no: str | None = None
        if kind_text == PAYMENT:
            kind = LineKind.PAYMENT
            if amount <= 0:
                raise StatementError(line_no, "a payment of no or negative amount")
        elif kind_text == REFUND:
            kind = LineKind.REFUND
            if amount >= 0:
                raise StatementError(line_no, "a refund must be negative")
            amount = -amount
            refund_no = fields[i_refund].strip()
            if not refund_no or len(refund_no) > 64:
                raise StatementError(line_no, "a refund without 退款批次号/请求号")
        else:
            raise StatementError(line_no, "业务类型 is neither 交易 nor 退款")
        counts[kind] += 1
        sums[kind] += amount
        yield StatementLine(
            line_no=line_no,
            kind=kind,
            order_no=order_no,
            channel_trade_no=trade_no,
            amount_fen=amount,
            occurred_at=_time(fields[i_finished].strip(), line_no, last_time),
            refund_no=refund_no,
        )
    end = line_no + 1  # the totals are checked where the file ends
    if columns is None:
        raise StatementError(end, "no column header: not an Alipay trade bill")
    if LineKind.PAYMENT not in totals:
        raise StatementError(end, "no #交易合计 line: the file is incomplete")
    totals.setdefault(LineKind.REFUND, (0, 0, end))
    for kind, word in ((LineKind.PAYMENT, "交易合计"), (LineKind.REFUND, "退款合计")):
        count, total, said_at = totals[kind]
        if (count, total) != (counts[kind], sums[kind]):
            raise StatementError(
                said_at,
                f"#{word} says {count} lines, {format_yuan(total)} yuan; the rows hold {counts[kind]} lines,"
                f" {format_yuan(sums[kind])} yuan",
            )


def _read_total(text: str, line_no: int, totals: dict[LineKind, tuple[int, int, int]]) -> None:
    for kind, pattern in ((LineKind.PAYMENT, _PAYMENT_TOTAL), (LineKind.REFUND, _REFUND_TOTAL)):
        match = pattern.match(text)
        if match is None:
            continue
        if kind in totals:
            raise StatementError(line_no, "a total repeated")
        amount = _yuan(match.group(2), line_no, "the total") if match.group(2) not in ("0.00", "-0.00") else 0
        if (kind is LineKind.PAYMENT and amount < 0) or (kind is LineKind.REFUND and amount > 0):
            raise StatementError(line_no, "a total of the wrong sign")
        totals[kind] = (int(match.group(1)), abs(amount), line_no)


# --- rendering (the sandbox's bills, benchmarks) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BillRow:
    kind: LineKind
    trade_no: str
    order_no: str
    amount_fen: int  # positive; a refund is written negative
    created_at: datetime
    finished_at: datetime
    subject: str = ""
    refund_no: str = ""


def _text(value: str) -> str:
    if "," in value or '"' in value or "\n" in value:
        return '"' + value.replace('"', '""') + '"'
    return value


class _TimeText:
    """China time as the bill writes it, remembering the last one: a day's rows share most of their seconds."""

    def __init__(self) -> None:
        self.last: tuple[datetime, str] | None = None

    def __call__(self, moment: datetime) -> str:
        if self.last is None or self.last[0] != moment:
            self.last = (moment, moment.astimezone(CHINA_TIME).isoformat(" ", "seconds")[:19])
        return self.last[1]


def render(
    rows: Iterable[BillRow], *, account: str = "20880000000000000156", day: date | None = None, encoding: str = "gbk"
) -> Iterator[bytes]:
    """A trade bill as Alipay lays it out, line by line (CRLF), GBK unless told otherwise; totals from the rows."""
    stamp = (day or date(2026, 1, 1)).strftime("%Y年%m月%d日")
    head = [
        "#支付宝业务明细查询",
        f"#账号：[{account}]",
        f"#起始日期：[{stamp} 00:00:00]   终止日期：[{stamp} 23:59:59]",
        _START_MARKER,
        ",".join(HEADER),
    ]
    for line in head:
        yield (line + "\r\n").encode(encoding)
    count = {LineKind.PAYMENT: 0, LineKind.REFUND: 0}
    total = {LineKind.PAYMENT: 0, LineKind.REFUND: 0}
    shown = _TimeText()
    for row in rows:
        count[row.kind] += 1
        total[row.kind] += row.amount_fen
        refund = row.kind is LineKind.REFUND
        amount = format_yuan(-row.amount_fen if refund else row.amount_fen)
        created, finished = shown(row.created_at), shown(row.finished_at)
        yield (
            f"{row.trade_no}\t,{row.order_no}\t,{REFUND if refund else PAYMENT}\t,{_text(row.subject)}\t,{created},"
            f"{finished},\t,\t,\t,\t,\t,{amount},{amount},0.00,0.00,0.00,0.00,0.00,,0.00,0.00,{row.refund_no}\t,"
            "0.00,0.00,\r\n"
        ).encode(encoding)
    refunds = format_yuan(-total[LineKind.REFUND]) if total[LineKind.REFUND] else "0.00"
    tail = [
        END_MARKER,
        f"#交易合计：{count[LineKind.PAYMENT]}笔，商家实收共{format_yuan(total[LineKind.PAYMENT])}元，商家优惠共0.00元",
        f"#退款合计：{count[LineKind.REFUND]}笔，商家实收退款共{refunds}元，商家优惠退款共0.00元",
        f"#导出时间：[{stamp} 09:00:00]",
    ]
    for line in tail:
        yield (line + "\r\n").encode(encoding)
