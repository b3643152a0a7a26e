"""The two withholding files (docs/bank-gateway.md): our debit file and the bank's result file, both ASCII lines
ending in LF with a header, one line per order and a trailer, each signed by its sender in a detached BANKSIG file
(payments/channels/bank.py). Pure: bytes in, typed values out; `FileError` with the line number for anything else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from payments.money import MoneyError, check_fen

DEBIT, RESULT = "WHDEBIT", "WHRESULT"
MAX_LINES = 1_000_000
MAX_LINE = 256

_TOKEN = re.compile(r"[A-Za-z0-9_\-]{1,40}")
_SEQ = re.compile(r"[1-9][0-9]{0,6}")
_COUNT = re.compile(r"0|[1-9][0-9]{0,6}")
_AMOUNT = re.compile(r"[1-9][0-9]{0,17}")
_TOTAL = re.compile(r"0|[1-9][0-9]{0,18}")
_TIME = re.compile(r"[0-9]{8}T[0-9]{6}Z")


class FileError(ValueError):
    """Not the documented file, or its counts and totals disagree: nothing of it is used."""

    def __init__(self, line_no: int, message: str) -> None:
        super().__init__(f"line {line_no}: {message}")
        self.line_no = line_no


class ResultCode(StrEnum):
    SUCCESS = "SUCCESS"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    AGREEMENT_REVOKED = "AGREEMENT_REVOKED"
    AGREEMENT_ABSENT = "AGREEMENT_ABSENT"
    ACCOUNT_CLOSED = "ACCOUNT_CLOSED"
    ACCOUNT_FROZEN = "ACCOUNT_FROZEN"
    DEBIT_REFUSED = "DEBIT_REFUSED"  # any other refusal by the bank


@dataclass(frozen=True, slots=True)
class DebitLine:
    seq: int
    order_no: str
    agreement_no: str
    amount_fen: int


@dataclass(frozen=True)
class DebitFile:
    merchant: str
    batch_no: str
    created_at: datetime
    lines: tuple[DebitLine, ...]

    @property
    def total_fen(self) -> int:
        return sum(line.amount_fen for line in self.lines)


@dataclass(frozen=True, slots=True)
class ResultLine:
    seq: int
    order_no: str
    amount_fen: int
    code: ResultCode
    bank_trade_no: str  # empty unless SUCCESS


@dataclass(frozen=True)
class ResultFile:
    merchant: str
    batch_no: str
    lines: tuple[ResultLine, ...]

    @property
    def total_fen(self) -> int:
        return sum(line.amount_fen for line in self.lines)


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _check_token(value: str, what: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"{what} must be 1 to 40 of A-Z a-z 0-9 _ -")
    return value


def write_debit(debit: DebitFile) -> bytes:
    _check_token(debit.merchant, "merchant id")
    _check_token(debit.batch_no, "batch number")
    out = [
        f"{DEBIT}|1|{debit.merchant}|{debit.batch_no}|{_time(debit.created_at)}|{len(debit.lines)}|{debit.total_fen}"
    ]
    for line in debit.lines:
        _check_token(line.order_no, "order number")
        _check_token(line.agreement_no, "agreement number")
        out.append(f"D|{line.seq}|{line.order_no}|{line.agreement_no}|{check_fen(line.amount_fen)}")
    out.append(f"END|{len(debit.lines)}|{debit.total_fen}")
    return ("\n".join(out) + "\n").encode("ascii")


def write_result(result: ResultFile) -> bytes:
    _check_token(result.merchant, "merchant id")
    _check_token(result.batch_no, "batch number")
    out = [f"{RESULT}|1|{result.merchant}|{result.batch_no}|{len(result.lines)}|{result.total_fen}"]
    for line in result.lines:
        out.append(f"R|{line.seq}|{line.order_no}|{line.amount_fen}|{line.code.value}|{line.bank_trade_no}")
    paid = [line for line in result.lines if line.code is ResultCode.SUCCESS]
    out.append(f"END|{len(result.lines)}|{len(paid)}|{sum(line.amount_fen for line in paid)}")
    return ("\n".join(out) + "\n").encode("ascii")


def _lines(data: bytes) -> list[str]:
    if not data.endswith(b"\n"):
        raise FileError(0, "the file must end with a line feed (cut short?)")
    raw = data[:-1].split(b"\n")
    if len(raw) > MAX_LINES + 2:
        raise FileError(MAX_LINES + 3, "too many lines")
    lines = []
    for number, item in enumerate(raw, start=1):
        if len(item) > MAX_LINE:
            raise FileError(number, "line too long")
        try:
            line = item.decode("ascii")
        except UnicodeDecodeError:
            raise FileError(number, "not ASCII") from None
        if not line.isprintable():
            raise FileError(number, "control characters")
        lines.append(line)
    if len(lines) < 2:
        raise FileError(len(lines), "a header and a trailer at least")
    return lines


def _int(value: str, pattern: re.Pattern[str], line_no: int, what: str) -> int:
    if not pattern.fullmatch(value):
        raise FileError(line_no, f"{what} malformed")
    return int(value)


def _amount(value: str, line_no: int) -> int:
    try:
        return check_fen(_int(value, _AMOUNT, line_no, "amount"))
    except MoneyError:
        raise FileError(line_no, "amount out of range") from None


def _token(value: str, line_no: int, what: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise FileError(line_no, f"{what} malformed")
    return value


def _seqs_in_order(seqs: Iterable[int], first_line: int) -> None:
    for offset, seq in enumerate(seqs):
        if seq != offset + 1:
            raise FileError(first_line + offset, "sequence numbers must run 1, 2, 3 ... without gaps or repeats")


def _fields(line: str, number: int, tag: str, count: int, expected: str) -> list[str]:
    """The |-separated fields of a line: exactly `count`, the first `tag`; FileError saying what was `expected`."""
    fields = line.split("|")
    if len(fields) != count or fields[0] != tag:
        raise FileError(number, expected)
    return fields


def _header(lines: list[str], kind: str, count: int, expected: str) -> tuple[list[str], str, str]:
    """The header line of a `kind` file, version 1, with its merchant id and batch number."""
    head = lines[0].split("|")
    if len(head) != count or head[0] != kind or head[1] != "1":
        raise FileError(1, f"not a {kind} file (header {expected})")
    return head, _token(head[2], 1, "merchant id"), _token(head[3], 1, "batch number")


def parse_debit(data: bytes) -> DebitFile:
    lines = _lines(data)
    head, merchant, batch_no = _header(lines, DEBIT, 7, f"{DEBIT}|1|merchant|batch|time|count|total")
    if not _TIME.fullmatch(head[4]):
        raise FileError(1, "time must be YYYYMMDDTHHMMSSZ")
    try:
        created = datetime.strptime(head[4], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise FileError(1, "time is not a date and time") from None
    count, total = _int(head[5], _COUNT, 1, "count"), _int(head[6], _TOTAL, 1, "total")
    body: list[DebitLine] = []
    for number, line in enumerate(lines[1:-1], start=2):
        f = _fields(line, number, "D", 5, "expected D|seq|order|agreement|amount")
        body.append(
            DebitLine(
                _int(f[1], _SEQ, number, "sequence number"),
                _token(f[2], number, "order number"),
                _token(f[3], number, "agreement number"),
                _amount(f[4], number),
            )
        )
    _seqs_in_order((line.seq for line in body), 2)
    end_no = len(lines)
    tail = _fields(lines[-1], end_no, "END", 3, "expected END|count|total")
    debit = DebitFile(merchant, batch_no, created, tuple(body))
    stated = (_int(tail[1], _COUNT, end_no, "count"), _int(tail[2], _TOTAL, end_no, "total"))
    if (count, total) != stated or stated != (len(body), debit.total_fen):
        raise FileError(end_no, "header and trailer counts or totals disagree with the lines")
    return debit


def parse_result(data: bytes) -> ResultFile:
    lines = _lines(data)
    head, merchant, batch_no = _header(lines, RESULT, 6, f"{RESULT}|1|merchant|batch|count|total")
    count, total = _int(head[4], _COUNT, 1, "count"), _int(head[5], _TOTAL, 1, "total")
    body: list[ResultLine] = []
    for number, line in enumerate(lines[1:-1], start=2):
        f = _fields(line, number, "R", 6, "expected R|seq|order|amount|code|bank trade number")
        try:
            code = ResultCode(f[4])
        except ValueError:
            raise FileError(number, "unknown result code") from None
        success = code is ResultCode.SUCCESS
        if success != bool(f[5]) or (success and not _TOKEN.fullmatch(f[5])):
            raise FileError(number, "a bank trade number on SUCCESS lines only, and well-formed")
        body.append(
            ResultLine(
                _int(f[1], _SEQ, number, "sequence number"),
                _token(f[2], number, "order number"),
                _amount(f[3], number),
                code,
                f[5],
            )
        )
    _seqs_in_order((line.seq for line in body), 2)
    end_no = len(lines)
    tail = _fields(lines[-1], end_no, "END", 4, "expected END|count|success count|success total")
    result = ResultFile(merchant, batch_no, tuple(body))
    paid = [line for line in body if line.code is ResultCode.SUCCESS]
    stated = tuple(_int(v, p, end_no, "trailer") for v, p in zip(tail[1:], (_COUNT, _COUNT, _TOTAL), strict=True))
    if (count, total) != (len(body), result.total_fen) or stated != (
        len(body),
        len(paid),
        sum(p.amount_fen for p in paid),
    ):
        raise FileError(end_no, "header and trailer counts or totals disagree with the lines")
    return result
