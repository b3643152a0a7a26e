"""WeChat Pay's daily trade bill (交易账单, bill_type=ALL): parsing it into statement lines, and rendering one.

Reference: WeChat Pay API v3 "交易账单文件格式说明". The file is UTF-8 (the download may start with a BOM), comma
separated, and every detail and summary field carries a leading backtick (so that spreadsheets keep long numbers as
text). Four parts in order: the detail header, the detail lines, the summary header, one summary line. Amounts are
yuan with two decimals. A SUCCESS line is a payment; a REFUND line is a refund accepted that day, with the refund
numbers, amount and status (a refund's status is a snapshot: it is not updated after the bill is made).

Parsing streams: one line in, at most one StatementLine out, so a million-line bill runs in constant memory. The
summary can only be checked at the end, so a StatementError may come after lines were yielded: a caller imports
nothing until the iterator is exhausted without error (the base interface's contract).

Our conventions where the format leaves a choice: a payment's `amount_fen` is its 订单金额 (what the order asked,
what our ledger posted), a refund's its 退款金额; a REFUND line's 应结订单金额 and 订单金额 are 0.00 and its 手续费 is
the fee returned (negative). Only SUCCESS and REFUND lines are understood: REVOKED exists for card-present
payments, which this service does not make, so a bill holding one is refused rather than half-read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from payments.channels.base import LineKind, StatementError, StatementLine
from payments.money import MAX_FEN

CHINA = timezone(timedelta(hours=8), "CST")

HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
    "应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,"
    "手续费,费率,订单金额,申请退款金额,费率备注"
)
SUMMARY_HEADER = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
FIELDS = HEADER.count(",") + 1  # 27
SUMMARY_FIELDS = SUMMARY_HEADER.count(",") + 1  # 7

# Column positions in a detail line.
_TIME, _APPID, _MCHID, _TRANSACTION_ID, _OUT_TRADE_NO, _STATE, _CURRENCY = 0, 1, 2, 5, 6, 9, 11
_SETTLE, _COUPON, _REFUND_ID, _OUT_REFUND_NO, _REFUND, _COUPON_REFUND, _REFUND_STATUS = 12, 13, 14, 15, 16, 17, 19
_FEE, _ORDER, _REFUND_ASKED = 22, 24, 25

_BOM = "\ufeff"
_TIME_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}", re.ASCII)
# Two decimals always (the bill never writes "12.3"), no leading zeros, bounded before any arithmetic.
_YUAN = re.compile(r"(-?)(0|[1-9][0-9]{0,9})\.([0-9]{2})", re.ASCII)
_TRADE_NO = re.compile(r"[0-9A-Za-z_\-*|]{1,64}", re.ASCII)
_STATUS = re.compile(r"[A-Z_]{1,32}", re.ASCII)
_DIGITS = re.compile(r"0|[1-9][0-9]{0,9}", re.ASCII)


# --- parsing -----------------------------------------------------------------------------------------------------


def _text(raw: bytes | bytearray, line_no: int) -> str:
    if not isinstance(raw, bytes | bytearray):
        raise StatementError(line_no, "a bill line is bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StatementError(line_no, "not UTF-8") from None
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    if "\n" in text or "\r" in text:
        raise StatementError(line_no, "a line break inside a line")
    return text


def _fields(text: str, count: int, line_no: int) -> list[str]:
    # Every field starts with a backtick, so the separators are exactly the ",`" pairs: counting both proves it
    # for the whole line at once, without a pass per field.
    commas = text.count(",")
    if commas != count - 1:
        raise StatementError(line_no, f"{commas + 1} fields, expected {count}")
    if not text.startswith("`") or text.count(",`") != commas:
        raise StatementError(line_no, "a field without its leading backtick")
    return text[1:].split(",`")


# Valid amount texts seen recently and their fen: a bill repeats a few amounts (contribution tiers, fees, "0.00")
# on most of its lines. Bounded, and only ever holding what _parse_amount accepted.
_AMOUNTS: dict[str, int] = {"0.00": 0}
_AMOUNTS_MAX = 4096


def _parse_amount(text: str, line_no: int, name: str) -> int:
    match = _YUAN.fullmatch(text)
    if match is None:
        raise StatementError(line_no, f"{name} is not a yuan amount with two decimals")
    sign, whole, cents = match.groups()
    fen = int(whole) * 100 + int(cents)
    if sign:
        if fen == 0:
            raise StatementError(line_no, f"{name} is a signed zero")
        fen = -fen
    return fen


def _fen(text: str, line_no: int, name: str, *, signed: bool = False) -> int:
    fen = _AMOUNTS.get(text)
    if fen is None:
        fen = _parse_amount(text, line_no, name)
        if len(_AMOUNTS) >= _AMOUNTS_MAX:
            _AMOUNTS.clear()
        _AMOUNTS[text] = fen
    if fen < 0 and not signed:
        raise StatementError(line_no, f"{name} may not be negative")
    return fen


@dataclass(slots=True)
class _Totals:
    count: int = 0
    settle: int = 0
    refund: int = 0
    coupon_refund: int = 0
    fee: int = 0
    order: int = 0
    refund_asked: int = 0
    time_text: str = ""  # the last 交易时间 read and its value
    time: datetime = datetime.min


def _time(text: str, line_no: int, totals: _Totals) -> datetime:
    if text == totals.time_text:  # a busy bill has many lines in the same second
        return totals.time
    if _TIME_SHAPE.fullmatch(text) is None:
        raise StatementError(line_no, "交易时间 is not yyyy-MM-dd HH:mm:ss")
    try:
        at = datetime.fromisoformat(text).replace(tzinfo=CHINA)
    except ValueError:
        raise StatementError(line_no, "交易时间 is not a valid time") from None
    totals.time_text, totals.time = text, at
    return at


def _detail(f: list[str], line_no: int, totals: _Totals) -> StatementLine:
    occurred_at = _time(f[_TIME], line_no, totals)
    transaction_id, out_trade_no = f[_TRANSACTION_ID], f[_OUT_TRADE_NO]
    if _TRADE_NO.fullmatch(transaction_id) is None or _TRADE_NO.fullmatch(out_trade_no) is None:
        raise StatementError(line_no, "微信订单号 or 商户订单号 missing or malformed")
    if f[_CURRENCY] != "CNY":
        raise StatementError(line_no, "货币种类 is not CNY")
    settle = _fen(f[_SETTLE], line_no, "应结订单金额")
    _fen(f[_COUPON], line_no, "代金券金额")
    refund = _fen(f[_REFUND], line_no, "退款金额")
    coupon_refund = _fen(f[_COUPON_REFUND], line_no, "充值券退款金额")
    fee = _fen(f[_FEE], line_no, "手续费", signed=True)
    order = _fen(f[_ORDER], line_no, "订单金额")
    refund_asked = _fen(f[_REFUND_ASKED], line_no, "申请退款金额")
    state = f[_STATE]
    if state == "SUCCESS":
        if order <= 0 or settle > order:
            raise StatementError(line_no, "a payment's 订单金额 must be positive and at least 应结订单金额")
        if refund or refund_asked or coupon_refund or f[_REFUND_ID] or f[_OUT_REFUND_NO]:
            raise StatementError(line_no, "a payment line with refund fields")
        line = StatementLine(line_no, LineKind.PAYMENT, out_trade_no, transaction_id, order, occurred_at)
    elif state == "REFUND":
        refund_id, out_refund_no = f[_REFUND_ID], f[_OUT_REFUND_NO]
        if _TRADE_NO.fullmatch(refund_id) is None or _TRADE_NO.fullmatch(out_refund_no) is None:
            raise StatementError(line_no, "微信退款单号 or 商户退款单号 missing or malformed")
        if refund <= 0 or refund_asked < refund:
            raise StatementError(line_no, "a refund's 退款金额 must be positive and at most 申请退款金额")
        if _STATUS.fullmatch(f[_REFUND_STATUS]) is None:
            raise StatementError(line_no, "退款状态 missing or malformed")
        line = StatementLine(
            line_no, LineKind.REFUND, out_trade_no, transaction_id, refund, occurred_at, out_refund_no, refund_id
        )
    else:
        raise StatementError(line_no, "交易状态 is neither SUCCESS nor REFUND")
    totals.count += 1
    totals.settle += settle
    totals.refund += refund
    totals.coupon_refund += coupon_refund
    totals.fee += fee
    totals.order += order
    totals.refund_asked += refund_asked
    return line


def _check_summary(f: list[str], line_no: int, totals: _Totals) -> None:
    if _DIGITS.fullmatch(f[0]) is None:
        raise StatementError(line_no, "总交易单数 is not a count")
    if int(f[0]) != totals.count:
        raise StatementError(line_no, f"总交易单数 says {f[0]}, the bill has {totals.count} lines")
    expected = (
        ("应结订单总金额", totals.settle, False),
        ("退款总金额", totals.refund, False),
        ("充值券退款总金额", totals.coupon_refund, False),
        ("手续费总金额", totals.fee, True),
        ("订单总金额", totals.order, False),
        ("申请退款总金额", totals.refund_asked, False),
    )
    for text, (name, total, signed) in zip(f[1:], expected, strict=True):
        if _fen(text, line_no, name, signed=signed) != total:
            raise StatementError(line_no, f"{name} disagrees with the sum of the detail lines")


def parse(lines: Iterable[bytes]) -> Iterator[StatementLine]:
    """Statement lines of a trade bill, one raw line (with or without its line end) at a time.

    Raises StatementError with the line number for anything that is not this format or whose summary disagrees with
    the detail lines; a whole file given as one bytes object is split into lines first.
    """
    if isinstance(lines, bytes | bytearray):
        lines = bytes(lines).splitlines(keepends=True)
    totals = _Totals()
    line_no = 0
    stage = "header"  # header → detail → summary → end
    for raw in lines:
        line_no += 1
        text = _text(raw, line_no)
        if stage == "detail":
            if text == SUMMARY_HEADER:
                stage = "summary"
            else:
                yield _detail(_fields(text, FIELDS, line_no), line_no, totals)
        elif stage == "header":
            if line_no == 1 and text.startswith(_BOM):
                text = text[1:]
            if text != HEADER:
                raise StatementError(line_no, "not a WeChat Pay trade bill (ALL) header")
            stage = "detail"
        elif stage == "summary":
            _check_summary(_fields(text, SUMMARY_FIELDS, line_no), line_no, totals)
            stage = "end"
        elif text:  # after the summary only empty lines may follow
            raise StatementError(line_no, "content after the summary line")
    if stage != "end":
        raise StatementError(line_no, "the bill ends before its summary")


# --- rendering ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BillRow:
    """One detail line to render. A payment's amount is the order amount; a refund's is the refund amount."""

    occurred_at: datetime  # timezone-aware; written in China time
    transaction_id: str
    out_trade_no: str
    amount_fen: int
    kind: LineKind = LineKind.PAYMENT
    refund_id: str = ""
    out_refund_no: str = ""
    refund_status: str = "SUCCESS"
    appid: str = "wx0000000000000000"
    mchid: str = "1900000000"
    fee_fen: int = 0  # the channel's fee, positive on a payment; on a refund the fee returned, written negative
    openid: str = ""
    description: str = ""


def _yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole}.{cents:02d}"


def render(rows: Iterable[BillRow], *, bom: bool = True) -> Iterator[bytes]:
    """The trade bill for `rows`, line by line (CRLF ends), with the summary computed as it goes: constant memory,
    so a million-line bill can be streamed to a file or into `parse`. A text field holding a comma or a line break
    is refused (ValueError): the format has no quoting, so it would shift every column after it."""
    yield ((_BOM if bom else "") + HEADER + "\r\n").encode("utf-8")
    totals = _Totals()
    last_at: datetime | None = None
    when = ""
    for row in rows:
        if not 0 < row.amount_fen <= MAX_FEN:
            raise ValueError("a bill row's amount is positive fen")
        if row.occurred_at != last_at:  # consecutive rows often share their second
            at = row.occurred_at.astimezone(CHINA)
            when = f"{at.year:04d}-{at.month:02d}-{at.day:02d} {at.hour:02d}:{at.minute:02d}:{at.second:02d}"
            last_at = row.occurred_at
        amount = _yuan(row.amount_fen)
        # The fields up to the trade type are the same for a payment and a refund of one trade.
        trade = (
            f"`{when},`{row.appid},`{row.mchid},`0,`,`{row.transaction_id},`{row.out_trade_no},`{row.openid},`NATIVE,"
        )
        if row.kind is LineKind.PAYMENT:
            fee = row.fee_fen
            line = trade + (
                f"`SUCCESS,`OTHERS,`CNY,`{amount},`0.00,`,`,`0.00,`0.00,`,`,`{row.description},`,"
                f"`{_yuan(fee)},`0.60%,`{amount},`0.00,`"
            )
            totals.settle += row.amount_fen
            totals.order += row.amount_fen
        else:
            fee = -row.fee_fen
            line = trade + (
                f"`REFUND,`OTHERS,`CNY,`0.00,`0.00,`{row.refund_id},`{row.out_refund_no},`{amount},`0.00,"
                f"`ORIGINAL,`{row.refund_status},`{row.description},`,`{_yuan(fee)},`0.60%,`0.00,`{amount},`"
            )
            totals.refund += row.amount_fen
            totals.refund_asked += row.amount_fen
        # One check for every text field at once: exactly the separators the format has, and no line break.
        if line.count(",") != FIELDS - 1 or "\n" in line or "\r" in line:
            raise ValueError("a bill field may not contain commas or line breaks")
        totals.count += 1
        totals.fee += fee
        yield (line + "\r\n").encode("utf-8")
    yield (SUMMARY_HEADER + "\r\n").encode("utf-8")
    summary = (
        f"`{totals.count},`{_yuan(totals.settle)},`{_yuan(totals.refund)},`{_yuan(totals.coupon_refund)},"
        f"`{_yuan(totals.fee)},`{_yuan(totals.order)},`{_yuan(totals.refund_asked)}\r\n"
    )
    yield summary.encode("utf-8")
