"""Alipay (open platform, RSA2) wire format: asynchronous notification verification and parsing, the acknowledgement
bodies, and the signature on our own requests.

Reference: Alipay open platform documentation, "异步通知验签" (verifying async notifications), "自行实现签名"
(signing requests) and the trade notification parameters of alipay.trade.* (trade_status, total_amount, ...).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from payments.channels.common import Acknowledgement, ChannelRefusal, RefusalReason
from payments.money import MoneyError, parse_yuan

# Alipay writes its times (notify_time, gmt_payment, request timestamps) in China Standard Time, which has no DST.
CHINA_TIME = timezone(timedelta(hours=8), "Asia/Shanghai")
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_TIME_MS = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(?:\.\d{1,3})?")  # gmt_refund carries milliseconds
_MAX_BODY = 64 * 1024
_MAX_PARAMS = 200
_MAX_RESPONSE = 1024 * 1024


def load_public_key(text: str | bytes) -> rsa.RSAPublicKey:
    """Alipay's public key as the console shows it (bare base64 of the DER SubjectPublicKeyInfo) or as PEM."""
    raw = text.encode("ascii") if isinstance(text, str) else text
    raw = raw.strip()
    if raw.startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(raw)
    else:
        key = serialization.load_der_public_key(base64.b64decode(b"".join(raw.split()), validate=True))
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
        raise ValueError("Alipay RSA2 keys are RSA keys of at least 2048 bits")
    return key


def _parse_yuan(value: str, name: str) -> int:
    # payments.money is the one strict yuan parser; amounts never pass through float. Up to two decimals, not
    # exactly two: Alipay writes two, but refusing a genuine "1.5" would only delay a real payment to the query path.
    try:
        return parse_yuan(value)
    except MoneyError:
        raise ChannelRefusal(RefusalReason.MALFORMED, f"{name} is not yuan with at most two decimals") from None


def _parse_time(value: str, name: str) -> datetime:
    if not _TIME.fullmatch(value):
        raise ChannelRefusal(RefusalReason.MALFORMED, f"{name} is not yyyy-MM-dd HH:mm:ss")
    try:
        return datetime.strptime(value, _TIME_FORMAT).replace(tzinfo=CHINA_TIME)
    except ValueError:
        raise ChannelRefusal(RefusalReason.MALFORMED, f"{name} is not a valid time") from None


def sign_content(params: Mapping[str, str], *, exclude: Iterable[str]) -> str:
    """Parameters sorted by name, empty values and the excluded names left out, joined as k=v&k=v with raw values."""
    skipped = set(exclude)
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k not in skipped and params[k] != "")


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """The notify body (application/x-www-form-urlencoded, UTF-8) as name/value pairs in the order sent."""
    if len(body) > _MAX_BODY:
        raise ChannelRefusal(RefusalReason.MALFORMED, "notify body too large")
    try:
        text = body.decode("ascii")  # a form body is percent-encoded ASCII; UTF-8 appears only after decoding
        return urllib.parse.parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=_MAX_PARAMS,
        )
    except (UnicodeDecodeError, ValueError):
        raise ChannelRefusal(RefusalReason.MALFORMED, "notify body is not a UTF-8 form") from None


def _unique(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in pairs:
        if not isinstance(name, str) or not isinstance(value, str):
            raise ChannelRefusal(RefusalReason.MALFORMED, "notify parameters are not strings")
        # A repeated name has no defined place in the signed content; accepting either copy would let a forger pick.
        if name in params:
            raise ChannelRefusal(RefusalReason.MALFORMED, f"parameter {name} repeated")
        params[name] = value
    return params


def verify_notify(pairs: Iterable[tuple[str, str]], public_key: rsa.RSAPublicKey) -> dict[str, str]:
    """Check the RSA2 signature of an async notification; return its parameters, still unparsed.

    The signed content is every parameter except sign and sign_type and except empty ones, sorted by name, with the
    URL-decoded values; sign_type must say RSA2 because RSA (SHA1) is not accepted by us.
    """
    params = _unique(pairs)
    if params.get("sign_type") != "RSA2":
        raise ChannelRefusal(RefusalReason.UNSUPPORTED, "sign_type is not RSA2")
    charset = params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise ChannelRefusal(RefusalReason.UNSUPPORTED, "charset is not UTF-8")
    sign = params.get("sign", "")
    try:
        signature = base64.b64decode(sign.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ChannelRefusal(RefusalReason.SIGNATURE, "sign is not base64") from None
    content = sign_content(params, exclude=("sign", "sign_type")).encode("utf-8")
    try:
        public_key.verify(signature, content, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise ChannelRefusal(RefusalReason.SIGNATURE, "sign does not verify") from None
    return params


class TradeStatus(StrEnum):
    WAIT_BUYER_PAY = "WAIT_BUYER_PAY"
    TRADE_CLOSED = "TRADE_CLOSED"
    TRADE_SUCCESS = "TRADE_SUCCESS"
    TRADE_FINISHED = "TRADE_FINISHED"


@dataclass(frozen=True, slots=True)
class TradeNotification:
    """A verified Alipay trade notification. Amounts in fen; times in China time."""

    notify_id: str  # for deduplicating deliveries
    notify_time: datetime
    app_id: str
    out_trade_no: str
    trade_no: str
    trade_status: TradeStatus
    total_amount_fen: int
    receipt_amount_fen: int | None
    buyer_pay_amount_fen: int | None
    refund_fee_fen: int | None  # present on the notification Alipay sends after a (partial) refund
    gmt_payment: datetime | None
    # A refund notice also carries these: out_biz_no is the refund's out_request_no (our refund number). refund_fee
    # is the total refunded on the trade so far, not this refund's amount.
    out_biz_no: str | None = None
    gmt_refund: datetime | None = None

    @property
    def is_refund(self) -> bool:
        return self.refund_fee_fen is not None


def _required(params: Mapping[str, str], name: str, max_len: int = 128) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise ChannelRefusal(RefusalReason.MALFORMED, f"parameter {name} missing")
    return value


def _optional_yuan(params: Mapping[str, str], name: str) -> int | None:
    value = params.get(name)
    return None if value is None or value == "" else _parse_yuan(value, name)


def parse_trade_notify(
    params: Mapping[str, str],
    *,
    app_id: str,
    now: float | None = None,
    max_age_seconds: int = 900,
    future_skew_seconds: int = 60,
) -> TradeNotification:
    """The fields of a verified notification, refused when they are not addressed to us or not in the window.

    notify_time is when Alipay sent this delivery; the window is past-only and counted in minutes (Alipay's own
    retries each carry a new notify_time, so a long window only serves replays).
    """
    if _required(params, "app_id", 32) != app_id:
        raise ChannelRefusal(RefusalReason.MISMATCH, "app_id is not ours")
    notify_time = _parse_time(_required(params, "notify_time"), "notify_time")
    current = time.time() if now is None else now
    sent = notify_time.timestamp()
    if sent < current - max_age_seconds or sent > current + future_skew_seconds:
        raise ChannelRefusal(RefusalReason.STALE, "notify_time outside the accepted window")
    try:
        status = TradeStatus(_required(params, "trade_status", 32))
    except ValueError:
        raise ChannelRefusal(RefusalReason.UNSUPPORTED, "unknown trade_status") from None
    gmt_payment = params.get("gmt_payment")
    refund_fee = _optional_yuan(params, "refund_fee")
    out_biz_no = params.get("out_biz_no") or None
    gmt_refund = params.get("gmt_refund") or None
    if refund_fee is not None and (out_biz_no is None or gmt_refund is None or len(out_biz_no) > 64):
        # A refund we cannot tie to its request number cannot be applied to anything.
        raise ChannelRefusal(RefusalReason.MALFORMED, "refund notice without out_biz_no or gmt_refund")
    total = _parse_yuan(_required(params, "total_amount", 32), "total_amount")
    if total == 0:
        raise ChannelRefusal(RefusalReason.MALFORMED, "total_amount is zero")  # Alipay's minimum is 0.01
    return TradeNotification(
        notify_id=_required(params, "notify_id"),
        notify_time=notify_time,
        app_id=app_id,
        out_trade_no=_required(params, "out_trade_no", 64),
        trade_no=_required(params, "trade_no", 64),
        trade_status=status,
        total_amount_fen=total,
        receipt_amount_fen=_optional_yuan(params, "receipt_amount"),
        buyer_pay_amount_fen=_optional_yuan(params, "buyer_pay_amount"),
        refund_fee_fen=refund_fee,
        gmt_payment=_parse_time(gmt_payment, "gmt_payment") if gmt_payment else None,
        out_biz_no=out_biz_no if refund_fee is not None else None,
        gmt_refund=_parse_refund_time(gmt_refund) if refund_fee is not None and gmt_refund else None,
    )


def _parse_refund_time(value: str) -> datetime:
    match = _TIME_MS.fullmatch(value)
    if match is None:
        raise ChannelRefusal(RefusalReason.MALFORMED, "gmt_refund is not yyyy-MM-dd HH:mm:ss[.SSS]")
    return _parse_time(match.group(1), "gmt_refund")


def read_notify(
    body: bytes,
    public_key: rsa.RSAPublicKey,
    *,
    app_id: str,
    now: float | None = None,
    max_age_seconds: int = 900,
    future_skew_seconds: int = 60,
) -> TradeNotification:
    """Parse, verify and read an async notify body in one step."""
    params = verify_notify(parse_form(body), public_key)
    return parse_trade_notify(
        params, app_id=app_id, now=now, max_age_seconds=max_age_seconds, future_skew_seconds=future_skew_seconds
    )


def acknowledge_success() -> Acknowledgement:
    """Alipay stops retrying only on the exact body "success": no newline, no JSON, no HTML."""
    return Acknowledgement(status=200, body=b"success", content_type="text/plain")


def acknowledge_refusal() -> Acknowledgement:
    """Any other body makes Alipay retry; "fail" is the conventional one."""
    return Acknowledgement(status=200, body=b"fail", content_type="text/plain")


def format_time(moment: datetime) -> str:
    """A datetime as Alipay's timestamp parameter wants it: China time, yyyy-MM-dd HH:mm:ss."""
    if moment.tzinfo is None:
        raise ValueError("an aware datetime is required")
    return moment.astimezone(CHINA_TIME).strftime(_TIME_FORMAT)


def sign_request(params: Mapping[str, str], private_key: rsa.RSAPrivateKey) -> dict[str, str]:
    """Our request parameters with sign added: RSA2 over every parameter but sign itself, sorted, empties left out.

    Unlike notification verification, sign_type IS part of what a request signs; it must already say RSA2.
    """
    if params.get("sign_type") != "RSA2":
        raise ValueError("requests are signed with sign_type=RSA2")
    if "sign" in params:
        raise ValueError("params already carry a sign")
    content = sign_content(params, exclude=("sign",)).encode("utf-8")
    signature = private_key.sign(content, padding.PKCS1v15(), hashes.SHA256())
    return {**params, "sign": base64.b64encode(signature).decode("ascii")}


def encode_form(params: Mapping[str, str]) -> str:
    """Signed parameters as a UTF-8 form body or query string; encoding happens after signing, never before."""
    return urllib.parse.urlencode(list(params.items()), encoding="utf-8")


# --- synchronous responses ------------------------------------------------------------------------------------


class ResponseError(ValueError):
    """A gateway response that is not Alipay's signed JSON envelope, or whose signature does not verify."""


def response_name(method: str) -> str:
    """The member of the envelope holding a method's result: alipay.trade.query -> alipay_trade_query_response."""
    return method.replace(".", "_") + "_response"


def _members(text: str) -> list[tuple[str, int, int]]:
    """The top-level members of a JSON object as (name, start, end) of each value's exact text.

    Alipay signs the raw text of one member's value, so its position in the body is needed, not a re-serialisation;
    the standard library's decoder reads each member, so nothing here parses JSON by hand.
    """
    decoder = json.JSONDecoder()
    ws = re.compile(r"[ \t\n\r]*")
    pos = ws.match(text, 0).end()  # type: ignore[union-attr]
    if text[pos : pos + 1] != "{":
        raise ResponseError("the response is not a JSON object")
    pos = ws.match(text, pos + 1).end()  # type: ignore[union-attr]
    members: list[tuple[str, int, int]] = []
    if text[pos : pos + 1] == "}":
        return members
    while True:
        try:
            name, pos = decoder.raw_decode(text, pos)
            if not isinstance(name, str):
                raise ResponseError("a member name is not a string")
            pos = ws.match(text, pos).end()  # type: ignore[union-attr]
            if text[pos : pos + 1] != ":":
                raise ResponseError("a member has no value")
            start = ws.match(text, pos + 1).end()  # type: ignore[union-attr]
            _, end = decoder.raw_decode(text, start)
        except (json.JSONDecodeError, RecursionError):  # RecursionError: nesting deeper than the decoder goes
            raise ResponseError("the response is not JSON") from None
        members.append((name, start, end))
        pos = ws.match(text, end).end()  # type: ignore[union-attr]
        separator = text[pos : pos + 1]
        if separator == "}":
            if text[ws.match(text, pos + 1).end() :]:  # type: ignore[union-attr]
                raise ResponseError("text after the response object")
            return members
        if separator != ",":
            raise ResponseError("the response is not a JSON object")
        pos = ws.match(text, pos + 1).end()  # type: ignore[union-attr]


def verify_response(body: bytes, method: str, public_key: rsa.RSAPublicKey) -> dict[str, object]:
    """The verified `<method>_response` object of a gateway answer.

    Alipay signs the exact UTF-8 text of that member's value (whatever its spacing and escapes) with RSA2; `sign`
    is a sibling member. An answer without it, with it repeated, or not verifying is refused: nothing unverified is
    trusted, error codes included.
    """
    if len(body) > _MAX_RESPONSE:
        raise ResponseError("the response is too large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ResponseError("the response is not UTF-8") from None
    members = _members(text)
    names = [name for name, _, _ in members]
    if len(set(names)) != len(names):
        raise ResponseError("a member is repeated")
    found = {name: (start, end) for name, start, end in members}
    wanted = response_name(method)
    if wanted not in found:
        wanted = "error_response"  # what the gateway answers for a method it does not know
    if wanted not in found or "sign" not in found:
        raise ResponseError("the response or its sign is missing")
    start, end = found[wanted]
    content = text[start:end]
    sign = json.loads(text[slice(*found["sign"])])
    if not isinstance(sign, str):
        raise ResponseError("sign is not a string")
    try:
        signature = base64.b64decode(sign.encode("ascii"), validate=True)
        public_key.verify(signature, content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    except (binascii.Error, UnicodeEncodeError, ValueError, InvalidSignature):
        raise ResponseError("the response's sign does not verify") from None
    value = json.loads(content)
    if not isinstance(value, dict):
        raise ResponseError("the response is not an object")
    return value


def sign_response(method: str, result: Mapping[str, object], private_key: rsa.RSAPrivateKey) -> bytes:
    """A gateway answer as Alipay builds it (for the sandbox and tests): the result's JSON text signed as sent."""
    content = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
    signature = private_key.sign(content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    sign = base64.b64encode(signature).decode("ascii")
    return f'{{"{response_name(method)}":{content},"sign":"{sign}"}}'.encode()


def sign_notify(params: Mapping[str, str], private_key: rsa.RSAPrivateKey) -> dict[str, str]:
    """An async notification signed as Alipay signs it (for the sandbox): sign and sign_type outside the content."""
    if "sign" in params:
        raise ValueError("params already carry a sign")
    unsigned = {**params, "sign_type": "RSA2"}
    content = sign_content(unsigned, exclude=("sign", "sign_type")).encode("utf-8")
    signature = private_key.sign(content, padding.PKCS1v15(), hashes.SHA256())
    return {**unsigned, "sign": base64.b64encode(signature).decode("ascii")}


def verify_request(params: Mapping[str, str], public_key: rsa.RSAPublicKey) -> bool:
    """Whether a request's RSA2 sign verifies under the application's public key (the gateway's side; sandbox)."""
    if params.get("sign_type") != "RSA2":
        return False
    try:
        signature = base64.b64decode(params.get("sign", "").encode("ascii"), validate=True)
        content = sign_content(params, exclude=("sign",)).encode("utf-8")
        public_key.verify(signature, content, padding.PKCS1v15(), hashes.SHA256())
    except (binascii.Error, UnicodeEncodeError, ValueError, InvalidSignature):
        return False
    return True
