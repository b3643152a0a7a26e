"""The bank gateway's wire format (docs/bank-gateway.md): signed JSON requests, responses and callbacks, the daily
statement, and detached signatures over batch files. Pure: bytes, headers and keys in, typed values out; no
database, no network, the clock passed in.

Both sides sign with ECDSA P-256 / SHA-256 (DER, base64) over one layout:

    <purpose>\\n<merchant id>\\n<timestamp>\\n<nonce>\\n<body bytes>

where the purpose is `REQUEST <path>`, `RESPONSE <path>` or `NOTIFY`, so a signature made for one use never
verifies for another. `Bank-Key-Id` names the signer's key: a `KeyRing` holds every key currently valid, so a
rotation with two keys verifies at once. The recipe is keys/signed_messages.py; `SCHEME` spells it the bank's way.
Whatever cannot be verified or understood raises `ChannelRefusal`; messages name fields, never their values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from keys.signed_messages import NONCE as NONCE
from keys.signed_messages import TOKEN, KeyRing, Reason, Scheme, SigningKey, format_time
from keys.signed_messages import request_purpose as request_purpose
from keys.signed_messages import response_purpose as response_purpose
from payments.channels.base import LineKind, StatementError, StatementLine
from payments.channels.common import Acknowledgement, ChannelRefusal, RefusalReason
from payments.money import MoneyError, check_fen


def _refusal(reason: Reason, message: str) -> ChannelRefusal:
    return ChannelRefusal(RefusalReason(reason), message)


SCHEME = Scheme("Bank", "Merchant-Id", max_body=64 * 1024, max_age=300, max_ahead=30, sort_keys=True, refuse=_refusal)
HEADERS = H_MERCHANT, H_KEY_ID, H_TIMESTAMP, H_NONCE, H_SIGNATURE = SCHEME.headers
MAX_BODY = SCHEME.max_body
NOTIFY = "NOTIFY"
# The recipe's steps, spelt the bank's way (verify_headers: `account=` is our merchant id).
sign_headers, verify_headers, loads, dumps = SCHEME.sign_headers, SCHEME.verify_headers, SCHEME.loads, SCHEME.dumps

_ORDER_NO = re.compile(r"[A-Za-z0-9_\-]{1,40}")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


# --- JSON fields -------------------------------------------------------------------------------------------------


def text(obj: Mapping[str, Any], name: str, pattern: re.Pattern[str] = _ORDER_NO, *, required: bool = True) -> str:
    value = obj.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ChannelRefusal(RefusalReason.MALFORMED, f"{name} missing or malformed")
    return value


def fen(obj: Mapping[str, Any], name: str) -> int:
    try:
        return check_fen(obj.get(name))
    except MoneyError:
        raise ChannelRefusal(RefusalReason.MALFORMED, f"{name} must be a positive integer in fen") from None


def timestamp_field(obj: Mapping[str, Any], name: str, *, required: bool = True) -> datetime | None:
    value = obj.get(name)
    if value is None and not required:
        return None
    return SCHEME.parse_time(value, name)


# --- callbacks ---------------------------------------------------------------------------------------------------


class PaymentState(StrEnum):
    NOT_FOUND = "NOT_FOUND"
    UNPAID = "UNPAID"
    PROCESSING = "PROCESSING"  # a withholding debit in a batch the bank has not settled yet
    PAID = "PAID"
    CLOSED = "CLOSED"
    FAILED = "FAILED"


class RefundState(StrEnum):
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class PaymentNotice:
    event_id: str
    order_no: str
    trade_no: str
    status: PaymentState
    amount_fen: int
    currency: str
    paid_at: datetime | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class RefundNotice:
    event_id: str
    order_no: str
    refund_no: str
    bank_refund_no: str
    status: RefundState
    amount_fen: int
    payload: dict[str, Any]


_CALLBACK_PAYMENT_STATES = {PaymentState.PAID, PaymentState.FAILED, PaymentState.CLOSED}


def _enum(obj: Mapping[str, Any], name: str, allowed: Iterable[StrEnum]) -> Any:
    value = obj.get(name)
    allowed = set(allowed)
    for member in allowed:
        if value == member.value:
            return member
    raise ChannelRefusal(RefusalReason.UNSUPPORTED, f"{name} is not one of {sorted(m.value for m in allowed)}")


def parse_notification(body: bytes) -> PaymentNotice | RefundNotice:
    """The body of a verified callback (verify the headers first)."""
    obj = loads(body)
    kind = obj.get("type")
    if kind == "payment":
        status = _enum(obj, "status", _CALLBACK_PAYMENT_STATES)
        currency = obj.get("currency")
        if currency != "CNY":
            raise ChannelRefusal(RefusalReason.UNSUPPORTED, "currency must be CNY")
        return PaymentNotice(
            event_id=text(obj, "event_id", TOKEN),
            order_no=text(obj, "order_no"),
            trade_no=text(obj, "trade_no", TOKEN),
            status=status,
            amount_fen=fen(obj, "amount_fen"),
            currency=currency,
            paid_at=timestamp_field(obj, "paid_at", required=status is PaymentState.PAID),
            payload=obj,
        )
    if kind == "refund":
        return RefundNotice(
            event_id=text(obj, "event_id", TOKEN),
            order_no=text(obj, "order_no"),
            refund_no=text(obj, "refund_no"),
            bank_refund_no=text(obj, "bank_refund_no", TOKEN),
            status=_enum(obj, "status", (RefundState.SUCCEEDED, RefundState.FAILED)),
            amount_fen=fen(obj, "amount_fen"),
            payload=obj,
        )
    raise ChannelRefusal(RefusalReason.UNSUPPORTED, "type must be payment or refund")


def acknowledge_success() -> Acknowledgement:
    return Acknowledgement(200, b'{"code":"OK"}', "application/json")


def acknowledge_refusal(refusal: ChannelRefusal | None) -> Acknowledgement:
    """A refusal is 400 with the reason (401 for a signature or key problem); without one it is our failure: 500.
    The bank retries any answer but 200 `OK`."""
    if refusal is None:
        return Acknowledgement(500, b'{"code":"RETRY"}', "application/json")
    status = 401 if refusal.reason in (RefusalReason.SIGNATURE, RefusalReason.UNKNOWN_KEY) else 400
    return Acknowledgement(status, dumps({"code": "REFUSED", "reason": refusal.reason.value}), "application/json")


# --- the daily statement -----------------------------------------------------------------------------------------

STATEMENT_MAGIC = "BANKSTMT"
_AMOUNT = re.compile(r"[1-9][0-9]{0,17}")
_COUNT = re.compile(r"0|[1-9][0-9]{0,9}")
_TOTAL = re.compile(r"0|[1-9][0-9]{0,18}")
MAX_LINE = 512


def _decode_line(raw: bytes, line_no: int) -> str:
    if len(raw) > MAX_LINE:
        raise StatementError(line_no, "line too long")
    try:
        line = raw.decode("ascii")
    except UnicodeDecodeError:
        raise StatementError(line_no, "not ASCII") from None
    if line.endswith("\n"):
        line = line[:-1]
    if not line.isprintable():
        raise StatementError(line_no, "control characters")
    return line


def _stmt_time(value: str, line_no: int) -> datetime:
    if not _TIME.fullmatch(value):
        raise StatementError(line_no, "time must be YYYY-MM-DDTHH:MM:SSZ")
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise StatementError(line_no, "not a date and time") from None


def _stmt_amount(value: str, line_no: int) -> int:
    if not _AMOUNT.fullmatch(value):
        raise StatementError(line_no, "amount must be a positive integer in fen")
    try:
        return check_fen(int(value))
    except MoneyError:
        raise StatementError(line_no, "amount out of range") from None


def parse_statement(
    lines: Iterable[bytes], *, merchant: str | None = None, day: date | None = None
) -> Iterator[StatementLine]:
    """Lines of a statement (docs/bank-gateway.md), streamed. The trailer's counts and totals are checked when it is
    reached: a consumer must treat the whole file as refused if a StatementError comes, even after lines."""
    line_no = 0
    header_seen = trailer_seen = False
    counts = {LineKind.PAYMENT: 0, LineKind.REFUND: 0}
    totals = {LineKind.PAYMENT: 0, LineKind.REFUND: 0}
    for raw in lines:
        line_no += 1
        if trailer_seen:
            raise StatementError(line_no, "data after the trailer")
        fields = _decode_line(raw, line_no).split("|")
        if not header_seen:
            if len(fields) != 4 or fields[0] != STATEMENT_MAGIC or fields[1] != "1":
                raise StatementError(line_no, "not a bank statement (header BANKSTMT|1|merchant|date)")
            if not TOKEN.fullmatch(fields[2]) or (merchant is not None and fields[2] != merchant):
                raise StatementError(line_no, "statement of another merchant")
            try:
                stated = date.fromisoformat(fields[3]) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", fields[3]) else None
            except ValueError:
                stated = None
            if stated is None or (day is not None and stated != day):
                raise StatementError(line_no, "statement date malformed or not the day asked for")
            header_seen = True
            continue
        tag = fields[0]
        if tag == "P" and len(fields) == 5:
            kind, refund_no, bank_refund_no = LineKind.PAYMENT, None, None
        elif tag == "R" and len(fields) == 7:
            kind = LineKind.REFUND
            refund_no, bank_refund_no = fields[5], fields[6]
            if not _ORDER_NO.fullmatch(refund_no) or not TOKEN.fullmatch(bank_refund_no):
                raise StatementError(line_no, "refund number malformed")
        elif tag == "END" and len(fields) == 5:
            _check_trailer(fields, counts, totals, line_no)
            trailer_seen = True
            continue
        else:
            raise StatementError(line_no, "expected a P, R or END line with its fields")
        if not _ORDER_NO.fullmatch(fields[1]) or not TOKEN.fullmatch(fields[2]):
            raise StatementError(line_no, "order or trade number malformed")
        amount = _stmt_amount(fields[3], line_no)
        counts[kind] += 1
        totals[kind] += amount
        yield StatementLine(
            line_no=line_no,
            kind=kind,
            order_no=fields[1],
            channel_trade_no=fields[2],
            amount_fen=amount,
            occurred_at=_stmt_time(fields[4], line_no),
            refund_no=refund_no,
            channel_refund_no=bank_refund_no,
        )
    if not header_seen:
        raise StatementError(line_no, "empty file")
    if not trailer_seen:
        raise StatementError(line_no, "no trailer: the file is cut short")


def _check_trailer(fields: list[str], counts: dict[LineKind, int], totals: dict[LineKind, int], line_no: int) -> None:
    numbers = fields[1:]
    if not all(_COUNT.fullmatch(n) for n in numbers[0::2]) or not all(_TOTAL.fullmatch(n) for n in numbers[1::2]):
        raise StatementError(line_no, "trailer counts and totals must be integers")
    stated = [int(n) for n in numbers]
    actual = [counts[LineKind.PAYMENT], totals[LineKind.PAYMENT], counts[LineKind.REFUND], totals[LineKind.REFUND]]
    if stated != actual:
        raise StatementError(line_no, "trailer counts or totals disagree with the lines")


def render_statement(merchant: str, day: date, lines: Iterable[StatementLine]) -> bytes:
    """The statement file for `lines` (the sandbox's side, and tests)."""
    out = [f"{STATEMENT_MAGIC}|1|{merchant}|{day.isoformat()}"]
    counts = {LineKind.PAYMENT: 0, LineKind.REFUND: 0}
    totals = {LineKind.PAYMENT: 0, LineKind.REFUND: 0}
    for line in lines:
        counts[line.kind] += 1
        totals[line.kind] += line.amount_fen
        base = f"{line.order_no}|{line.channel_trade_no}|{line.amount_fen}|{format_time(line.occurred_at)}"
        if line.kind is LineKind.PAYMENT:
            out.append(f"P|{base}")
        else:
            out.append(f"R|{base}|{line.refund_no}|{line.channel_refund_no}")
    p, r = LineKind.PAYMENT, LineKind.REFUND
    out.append(f"END|{counts[p]}|{totals[p]}|{counts[r]}|{totals[r]}")
    return ("\n".join(out) + "\n").encode("ascii")


# --- detached signatures over files ------------------------------------------------------------------------------

FILE_SIG_MAGIC = "BANKSIG"


def _file_message(kind: str, data: bytes) -> bytes:
    return f"FILE {kind}\n".encode("ascii") + data


def sign_file(key: SigningKey, kind: str, data: bytes) -> bytes:
    """The detached signature file of `data` (`BANKSIG|1|<kind>|<key id>|<base64>`), kind WHDEBIT or WHRESULT."""
    return f"{FILE_SIG_MAGIC}|1|{kind}|{key.key_id}|{key.sign(_file_message(kind, data))}\n".encode("ascii")


def verify_file(keys: KeyRing, kind: str, data: bytes, signature_file: bytes) -> str:
    """Verify a detached signature; returns the key id. Raises ChannelRefusal."""
    try:
        line = signature_file.decode("ascii").removesuffix("\n")
    except UnicodeDecodeError:
        raise ChannelRefusal(RefusalReason.MALFORMED, "signature file is not ASCII") from None
    fields = line.split("|")
    if len(fields) != 5 or fields[0] != FILE_SIG_MAGIC or fields[1] != "1" or not TOKEN.fullmatch(fields[3]):
        raise ChannelRefusal(RefusalReason.MALFORMED, "not a BANKSIG signature file")
    if fields[2] != kind:
        raise ChannelRefusal(RefusalReason.MISMATCH, f"signature is not for a {kind} file")
    SCHEME.verify_signature(keys, fields[3], _file_message(kind, data), fields[4])
    return fields[3]
