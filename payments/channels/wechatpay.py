"""WeChat Pay API v3 wire format: callback verification, resource decryption, transaction parsing, acknowledgements
and the Authorization header we sign our own requests with.

Reference: WeChat Pay API v3 developer documentation, "签名生成" (request signing), "签名验证" (verifying responses
and callbacks), "证书和回调报文解密" (AEAD_AES_256_GCM) and "支付通知" (the transaction notification).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from payments.channels.common import Acknowledgement, ChannelRefusal, RefusalReason, json_failure
from payments.money import MoneyError, check_fen

AUTH_SCHEME = "WECHATPAY2-SHA256-RSA2048"
PUBLIC_KEY_ID_PREFIX = "PUB_KEY_ID_"

# A platform certificate serial is the certificate's serial number in upper-case hex; a platform public key id is
# PUB_KEY_ID_ followed by digits. Anything else in Wechatpay-Serial cannot name a key of ours.
_CERT_SERIAL = re.compile(r"[0-9A-F]{1,64}")
_PUBLIC_KEY_ID = re.compile(r"PUB_KEY_ID_[0-9]{1,64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# The nonce is one line of the signed message; a newline in it would let a forger move bytes between the nonce and
# the body and keep the same message, so only printable ASCII without whitespace is accepted.
_NONCE = re.compile(r"[\x21-\x7e]{1,128}")
_OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_\-*|]{6,32}")
_TRANSACTION_ID = re.compile(r"[0-9A-Za-z]{1,32}")


def _check_rsa_public(key: object) -> rsa.RSAPublicKey:
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("WeChat Pay platform keys are RSA public keys")
    if key.key_size < 2048:
        raise ValueError("WeChat Pay platform keys are at least 2048 bits")
    return key


class PlatformKeys:
    """The platform keys callbacks may be signed with, by the name Wechatpay-Serial gives them.

    During a rotation, or while a merchant moves from platform certificates to the platform public key, WeChat Pay
    signs with either, so both kinds are held together and any number of them can be valid at once.
    """

    def __init__(self, keys: Mapping[str, rsa.RSAPublicKey]) -> None:
        checked: dict[str, rsa.RSAPublicKey] = {}
        for serial, key in keys.items():
            if not (_CERT_SERIAL.fullmatch(serial) or _PUBLIC_KEY_ID.fullmatch(serial)):
                raise ValueError("a key name must be an upper-case hex certificate serial or PUB_KEY_ID_<digits>")
            checked[serial] = _check_rsa_public(key)
        self._keys = checked

    @staticmethod
    def certificate_entry(pem: bytes) -> tuple[str, rsa.RSAPublicKey]:
        """(serial, key) from a platform certificate, with the serial spelled as Wechatpay-Serial spells it."""
        cert = x509.load_pem_x509_certificate(pem)
        return format(cert.serial_number, "X"), _check_rsa_public(cert.public_key())

    @staticmethod
    def public_key_entry(key_id: str, pem: bytes) -> tuple[str, rsa.RSAPublicKey]:
        """(key id, key) for the platform public key downloaded from the merchant platform."""
        if not _PUBLIC_KEY_ID.fullmatch(key_id):
            raise ValueError("a platform public key id looks like PUB_KEY_ID_<digits>")
        return key_id, _check_rsa_public(serialization.load_pem_public_key(pem))

    @classmethod
    def of(cls, *entries: tuple[str, rsa.RSAPublicKey]) -> PlatformKeys:
        return cls(dict(entries))

    def get(self, serial: str) -> rsa.RSAPublicKey | None:
        return self._keys.get(serial)

    def __len__(self) -> int:
        return len(self._keys)


@dataclass(frozen=True, slots=True)
class VerifiedCallback:
    """A callback whose signature and time window checked out.

    The nonce is returned, not remembered: the caller stores (serial, nonce) with the timestamp for at least the
    window's length and refuses a repeat, which is what makes a replay inside the window harmless.
    """

    timestamp: int
    nonce: str
    serial: str
    body: bytes


def _header(headers: Mapping[str, str], name: str) -> str:
    # HTTP header names are case-insensitive and frameworks differ in how they present them.
    wanted = name.lower()
    found = [v for k, v in headers.items() if isinstance(k, str) and k.lower() == wanted]
    if len(found) != 1 or not isinstance(found[0], str):
        raise ChannelRefusal(RefusalReason.MALFORMED, f"header {name} missing or repeated")
    return found[0].strip()


def _decode_b64(value: str, what: str, reason: RefusalReason) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ChannelRefusal(reason, f"{what} is not base64") from None


def signed_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    """The bytes WeChat Pay signs for a response or callback: timestamp, nonce and body, each followed by \\n."""
    return timestamp.encode("ascii") + b"\n" + nonce.encode("ascii") + b"\n" + body + b"\n"


def verify_callback(
    headers: Mapping[str, str],
    body: bytes,
    keys: PlatformKeys,
    *,
    max_age_seconds: int = 300,
    future_skew_seconds: int = 30,
    now: float | None = None,
) -> VerifiedCallback:
    """Verify a WeChat Pay callback (or a signed API response) before anything in its body is believed.

    The window is past-only: WeChat Pay signs each delivery when it sends it, so a timestamp older than the window is
    a replay or a badly delayed message, and one ahead of our clock by more than a small skew is refused too.
    """
    timestamp = _header(headers, "Wechatpay-Timestamp")
    nonce = _header(headers, "Wechatpay-Nonce")
    signature_b64 = _header(headers, "Wechatpay-Signature")
    serial = _header(headers, "Wechatpay-Serial")
    if not _TIMESTAMP.fullmatch(timestamp) or not _NONCE.fullmatch(nonce):
        raise ChannelRefusal(RefusalReason.MALFORMED, "Wechatpay-Timestamp or Wechatpay-Nonce malformed")
    # WeChat Pay documents an optional signature type header; when present it must name the only scheme we accept.
    signature_type = [v for k, v in headers.items() if isinstance(k, str) and k.lower() == "wechatpay-signature-type"]
    if signature_type and [v.strip() for v in signature_type] != [AUTH_SCHEME]:
        raise ChannelRefusal(RefusalReason.UNSUPPORTED, "Wechatpay-Signature-Type is not WECHATPAY2-SHA256-RSA2048")
    key = keys.get(serial)
    if key is None:
        raise ChannelRefusal(RefusalReason.UNKNOWN_KEY, "Wechatpay-Serial names no platform key we hold")
    # The signature is checked before the time window so that an unauthenticated sender learns nothing about our
    # clock; both must pass anyway.
    signature = _decode_b64(signature_b64, "Wechatpay-Signature", RefusalReason.SIGNATURE)
    try:
        key.verify(signature, signed_message(timestamp, nonce, body), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise ChannelRefusal(RefusalReason.SIGNATURE, "signature does not verify") from None
    sent = int(timestamp)
    current = time.time() if now is None else now
    if sent < current - max_age_seconds or sent > current + future_skew_seconds:
        raise ChannelRefusal(RefusalReason.STALE, "Wechatpay-Timestamp outside the accepted window")
    return VerifiedCallback(timestamp=sent, nonce=nonce, serial=serial, body=body)


# --- the notification envelope and its encrypted resource ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncryptedResource:
    algorithm: str
    ciphertext: str
    nonce: str
    associated_data: str
    original_type: str


@dataclass(frozen=True, slots=True)
class Notification:
    """The outer, unencrypted JSON of a notification."""

    id: str
    create_time: datetime
    event_type: str
    resource_type: str
    resource: EncryptedResource


def _require_str(obj: Mapping[str, Any], name: str, *, allow_empty: bool = False, max_len: int = 1024) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or (not value and not allow_empty) or len(value) > max_len:
        raise ChannelRefusal(RefusalReason.MALFORMED, f"field {name} missing or not a string")
    return value


def _require_obj(obj: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = obj.get(name)
    if not isinstance(value, dict):
        raise ChannelRefusal(RefusalReason.MALFORMED, f"field {name} missing or not an object")
    return value


def _load_json_object(data: bytes, what: str) -> Mapping[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ChannelRefusal(RefusalReason.MALFORMED, f"{what} is not UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise ChannelRefusal(RefusalReason.MALFORMED, f"{what} is not a JSON object")
    return value


def _parse_rfc3339(value: str, name: str) -> datetime:
    # WeChat Pay writes yyyy-MM-DDTHH:mm:ss+TIMEZONE; a time without an offset would be ambiguous, so it is refused.
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?([+-]\d{2}:\d{2}|Z)", value):
        raise ChannelRefusal(RefusalReason.MALFORMED, f"field {name} is not an RFC 3339 time with offset")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ChannelRefusal(RefusalReason.MALFORMED, f"field {name} is not a valid time") from None


def parse_notification(body: bytes) -> Notification:
    """The envelope of a verified callback body; the resource inside is still encrypted."""
    obj = _load_json_object(body, "notification body")
    res = _require_obj(obj, "resource")
    resource = EncryptedResource(
        algorithm=_require_str(res, "algorithm"),
        ciphertext=_require_str(res, "ciphertext", max_len=1 << 20),
        nonce=_require_str(res, "nonce"),
        # associated_data may legitimately be empty; the AEAD still binds it.
        associated_data=_require_str(res, "associated_data", allow_empty=True) if "associated_data" in res else "",
        original_type=_require_str(res, "original_type"),
    )
    return Notification(
        id=_require_str(obj, "id", max_len=64),
        create_time=_parse_rfc3339(_require_str(obj, "create_time"), "create_time"),
        event_type=_require_str(obj, "event_type", max_len=64),
        resource_type=_require_str(obj, "resource_type", max_len=64),
        resource=resource,
    )


def decrypt_resource(resource: EncryptedResource, apiv3_key: bytes) -> bytes:
    """Decrypt a notification resource: AEAD_AES_256_GCM, key = the 32-byte APIv3 key, tag = last 16 bytes."""
    if len(apiv3_key) != 32:
        raise ValueError("the APIv3 key is 32 bytes")
    if resource.algorithm != "AEAD_AES_256_GCM":
        raise ChannelRefusal(RefusalReason.UNSUPPORTED, "resource algorithm is not AEAD_AES_256_GCM")
    try:
        nonce = resource.nonce.encode("ascii")
        associated = resource.associated_data.encode("utf-8")
    except UnicodeEncodeError:
        raise ChannelRefusal(RefusalReason.MALFORMED, "resource nonce is not ASCII") from None
    if not 8 <= len(nonce) <= 64:  # WeChat Pay uses 12; AESGCM itself accepts 8..128 bytes
        raise ChannelRefusal(RefusalReason.MALFORMED, "resource nonce has an unexpected length")
    data = _decode_b64(resource.ciphertext, "resource ciphertext", RefusalReason.MALFORMED)
    if len(data) < 16:
        raise ChannelRefusal(RefusalReason.MALFORMED, "resource ciphertext shorter than its tag")
    try:
        return AESGCM(apiv3_key).decrypt(nonce, data, associated)
    except InvalidTag:
        raise ChannelRefusal(RefusalReason.DECRYPTION, "resource does not decrypt under the APIv3 key") from None


# --- the decrypted transaction ----------------------------------------------------------------------------------


class TradeState(StrEnum):
    SUCCESS = "SUCCESS"
    REFUND = "REFUND"
    NOTPAY = "NOTPAY"
    CLOSED = "CLOSED"
    REVOKED = "REVOKED"
    USERPAYING = "USERPAYING"
    PAYERROR = "PAYERROR"


@dataclass(frozen=True, slots=True)
class Transaction:
    """A WeChat Pay transaction as the payment notification (or the query API) describes it. Amounts in fen."""

    appid: str
    mchid: str
    out_trade_no: str
    transaction_id: str
    trade_state: TradeState
    total_fen: int
    payer_total_fen: int | None
    currency: str
    success_time: datetime | None


def _require_fen(obj: Mapping[str, Any], name: str, *, required: bool = True, allow_zero: bool = False) -> int | None:
    value = obj.get(name)
    if value is None and not required:
        return None
    # check_fen refuses bools and floats: a float would mean someone sent yuan, and neither is an amount in fen.
    try:
        return check_fen(value, allow_zero=allow_zero)
    except MoneyError:
        raise ChannelRefusal(RefusalReason.MALFORMED, f"amount.{name} is not an acceptable integer in fen") from None


# States in which the query API answers before WeChat Pay has a transaction number (nothing was ever charged).
_NUMBERLESS = frozenset({"NOTPAY", "CLOSED", "REVOKED", "USERPAYING"})


def parse_transaction(
    plaintext: bytes,
    *,
    expected_mchid: str | None = None,
    expected_appid: str | None = None,
    queried: bool = False,
) -> Transaction:
    """The decrypted resource of a TRANSACTION.* notification, refused unless every field we rely on is sound.

    `queried`: the body of the query API instead, where an order nobody has paid has no transaction_id yet (it is
    then ""); a notification always has one.
    """
    obj = _load_json_object(plaintext, "transaction")
    mchid = _require_str(obj, "mchid", max_len=32)
    appid = _require_str(obj, "appid", max_len=32)
    if expected_mchid is not None and mchid != expected_mchid:
        raise ChannelRefusal(RefusalReason.MISMATCH, "transaction mchid is not ours")
    if expected_appid is not None and appid != expected_appid:
        raise ChannelRefusal(RefusalReason.MISMATCH, "transaction appid is not ours")
    out_trade_no = _require_str(obj, "out_trade_no", max_len=32)
    numberless = queried and "transaction_id" not in obj and obj.get("trade_state") in _NUMBERLESS
    transaction_id = "" if numberless else _require_str(obj, "transaction_id", max_len=32)
    if not _OUT_TRADE_NO.fullmatch(out_trade_no) or not (numberless or _TRANSACTION_ID.fullmatch(transaction_id)):
        raise ChannelRefusal(RefusalReason.MALFORMED, "out_trade_no or transaction_id malformed")
    try:
        state = TradeState(_require_str(obj, "trade_state", max_len=32))
    except ValueError:
        raise ChannelRefusal(RefusalReason.UNSUPPORTED, "unknown trade_state") from None
    amount = _require_obj(obj, "amount")
    total = _require_fen(amount, "total")  # WeChat Pay's minimum is 1 fen
    # A coupon can cover the whole amount, so the payer may have paid nothing.
    payer_total = _require_fen(amount, "payer_total", required=False, allow_zero=True)
    assert total is not None
    if payer_total is not None and payer_total > total:
        # Coupons can only lower what the payer paid; more than the order total is not a WeChat Pay transaction.
        raise ChannelRefusal(RefusalReason.MALFORMED, "amount.payer_total exceeds amount.total")
    currency = amount.get("currency", "CNY")
    if currency != "CNY":
        raise ChannelRefusal(RefusalReason.UNSUPPORTED, "currency is not CNY")
    success_time = None
    if "success_time" in obj:
        success_time = _parse_rfc3339(_require_str(obj, "success_time"), "success_time")
    if state is TradeState.SUCCESS and success_time is None:
        raise ChannelRefusal(RefusalReason.MALFORMED, "a successful transaction without success_time")
    return Transaction(
        appid=appid,
        mchid=mchid,
        out_trade_no=out_trade_no,
        transaction_id=transaction_id,
        trade_state=state,
        total_fen=total,
        payer_total_fen=payer_total,
        currency="CNY",
        success_time=success_time,
    )


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """A verified, decrypted payment notification: what a callback handler hands to the order and ledger code."""

    event_id: str  # the notification id, for deduplicating deliveries of the same event
    event_type: str
    nonce: str  # for the caller's single-use check
    transaction: Transaction


def read_payment_callback(
    headers: Mapping[str, str],
    body: bytes,
    keys: PlatformKeys,
    apiv3_key: bytes,
    *,
    expected_mchid: str | None = None,
    expected_appid: str | None = None,
    max_age_seconds: int = 300,
    future_skew_seconds: int = 30,
    now: float | None = None,
) -> PaymentEvent:
    """Verify, decrypt and parse a payment notification in the order the specification requires."""
    verified = verify_callback(
        headers, body, keys, max_age_seconds=max_age_seconds, future_skew_seconds=future_skew_seconds, now=now
    )
    notification = parse_notification(verified.body)
    if notification.resource_type != "encrypt-resource" or notification.resource.original_type != "transaction":
        raise ChannelRefusal(RefusalReason.UNSUPPORTED, "not a payment notification")
    plaintext = decrypt_resource(notification.resource, apiv3_key)
    transaction = parse_transaction(plaintext, expected_mchid=expected_mchid, expected_appid=expected_appid)
    return PaymentEvent(
        event_id=notification.id, event_type=notification.event_type, nonce=verified.nonce, transaction=transaction
    )


# --- refunds: the refund notification's resource and the refund API's answer ----------------------------------


class RefundState(StrEnum):
    SUCCESS = "SUCCESS"
    CLOSED = "CLOSED"
    PROCESSING = "PROCESSING"
    ABNORMAL = "ABNORMAL"


_REFUND_EVENTS = {"REFUND.SUCCESS", "REFUND.ABNORMAL", "REFUND.CLOSED"}
_OUT_REFUND_NO = re.compile(r"[0-9A-Za-z_\-*|@]{1,64}")


@dataclass(frozen=True, slots=True)
class Refund:
    """A WeChat Pay refund as the REFUND.* notification or the refund API describes it. Amounts in fen."""

    out_trade_no: str
    out_refund_no: str
    refund_id: str
    transaction_id: str
    state: RefundState
    refund_fen: int
    total_fen: int
    success_time: datetime | None


def parse_refund(
    plaintext: bytes, *, expected_mchid: str | None = None, status_field: str = "refund_status"
) -> Refund:
    """A refund notification's decrypted resource (`refund_status`) or the refund API's body (`status`)."""
    obj = _load_json_object(plaintext, "refund")
    if expected_mchid is not None and "mchid" in obj and obj.get("mchid") != expected_mchid:
        raise ChannelRefusal(RefusalReason.MISMATCH, "refund mchid is not ours")
    out_trade_no = _require_str(obj, "out_trade_no", max_len=32)
    out_refund_no = _require_str(obj, "out_refund_no", max_len=64)
    refund_id = _require_str(obj, "refund_id", max_len=32)
    transaction_id = _require_str(obj, "transaction_id", max_len=32)
    if not (
        _OUT_TRADE_NO.fullmatch(out_trade_no)
        and _OUT_REFUND_NO.fullmatch(out_refund_no)
        and _TRANSACTION_ID.fullmatch(refund_id)
        and _TRANSACTION_ID.fullmatch(transaction_id)
    ):
        raise ChannelRefusal(RefusalReason.MALFORMED, "refund numbers malformed")
    try:
        state = RefundState(_require_str(obj, status_field, max_len=32))
    except ValueError:
        raise ChannelRefusal(RefusalReason.UNSUPPORTED, f"unknown {status_field}") from None
    amount = _require_obj(obj, "amount")
    refund = _require_fen(amount, "refund")
    total = _require_fen(amount, "total")
    assert refund is not None and total is not None
    if refund > total:
        raise ChannelRefusal(RefusalReason.MALFORMED, "amount.refund exceeds amount.total")
    if amount.get("currency", "CNY") != "CNY":
        raise ChannelRefusal(RefusalReason.UNSUPPORTED, "currency is not CNY")
    success_time = None
    if obj.get("success_time"):
        success_time = _parse_rfc3339(_require_str(obj, "success_time"), "success_time")
    return Refund(out_trade_no, out_refund_no, refund_id, transaction_id, state, refund, total, success_time)


def is_refund_event(event_type: str) -> bool:
    return event_type in _REFUND_EVENTS


def is_out_refund_no(value: str) -> bool:
    """WeChat Pay's merchant refund number alphabet (1-64 of digits, letters and _-*|@): safe in a URL path."""
    return _OUT_REFUND_NO.fullmatch(value) is not None


def is_out_trade_no(value: str) -> bool:
    """WeChat Pay's merchant order number alphabet (6-32 of digits, letters and _-*|): safe in a URL path."""
    return _OUT_TRADE_NO.fullmatch(value) is not None


# --- signing as WeChat Pay does (the sandbox's side of responses and callbacks) ---------------------------------


def platform_signature_headers(
    private_key: rsa.RSAPrivateKey, serial: str, body: bytes, *, timestamp: int, nonce: str
) -> dict[str, str]:
    """The Wechatpay-* headers WeChat Pay puts on every API answer and callback, signed with a platform key."""
    signature = private_key.sign(signed_message(str(timestamp), nonce, body), padding.PKCS1v15(), hashes.SHA256())
    return {
        "Wechatpay-Timestamp": str(timestamp),
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": base64.b64encode(signature).decode("ascii"),
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature-Type": AUTH_SCHEME,
    }


def encrypt_resource(
    plaintext: bytes, apiv3_key: bytes, *, nonce: str, associated_data: str, original_type: str
) -> dict[str, str]:
    """A notification resource (or an encrypted platform certificate) as WeChat Pay builds it: AEAD_AES_256_GCM
    under the APIv3 key, ciphertext||tag in base64."""
    sealed = AESGCM(apiv3_key).encrypt(nonce.encode("ascii"), plaintext, associated_data.encode("utf-8"))
    return {
        "original_type": original_type,
        "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": base64.b64encode(sealed).decode("ascii"),
        "associated_data": associated_data,
        "nonce": nonce,
    }


# --- acknowledgements --------------------------------------------------------------------------------------------


def acknowledge_success() -> Acknowledgement:
    """WeChat Pay takes HTTP 200 or 204 as received; 204 says there is no body to read."""
    return Acknowledgement(status=204, body=b"", content_type=None)


_REFUSAL_STATUS = {
    RefusalReason.MALFORMED: 400,
    RefusalReason.SIGNATURE: 401,
    RefusalReason.UNKNOWN_KEY: 401,
    RefusalReason.STALE: 401,
    RefusalReason.DECRYPTION: 400,
    RefusalReason.UNSUPPORTED: 400,
    RefusalReason.MISMATCH: 400,
}


def acknowledge_refusal(refusal: ChannelRefusal | None = None, *, status: int | None = None) -> Acknowledgement:
    """A 4xx/5xx with {"code":"FAIL","message":...}: WeChat Pay retries the notification later.

    Without a refusal (our own failure, e.g. the database is down) it is a 500 so the channel keeps retrying.
    """
    if refusal is None:
        return json_failure(status or 500, "internal error")
    return json_failure(status or _REFUSAL_STATUS[refusal.reason], refusal.message)


# --- signing our requests ----------------------------------------------------------------------------------------


def request_message(method: str, url: str, timestamp: str, nonce: str, body: str | bytes) -> bytes:
    """method\\nurl\\ntimestamp\\nnonce\\nbody\\n, where url is the absolute path with its query string."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    head = f"{method.upper()}\n{url}\n{timestamp}\n{nonce}\n".encode()
    return head + raw + b"\n"


def authorization_header(
    *,
    method: str,
    url: str,
    body: str | bytes,
    mchid: str,
    serial_no: str,
    private_key: rsa.RSAPrivateKey,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> str:
    """The Authorization header for a request to the WeChat Pay API v3, signed with the merchant API key.

    url is the path and query as sent (e.g. "/v3/pay/transactions/native"), not the host; for GET the body is "".
    """
    if not url.startswith("/"):
        raise ValueError("url is the request's absolute path with query, e.g. /v3/certificates")
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce_str = secrets.token_hex(16).upper() if nonce is None else nonce
    if not _NONCE.fullmatch(nonce_str) or '"' in nonce_str or "," in nonce_str:
        raise ValueError("nonce must be printable ASCII without quotes or commas")
    signature = private_key.sign(request_message(method, url, ts, nonce_str, body), padding.PKCS1v15(), hashes.SHA256())
    sig = base64.b64encode(signature).decode("ascii")
    return (
        f'{AUTH_SCHEME} mchid="{mchid}",nonce_str="{nonce_str}",signature="{sig}",'
        f'timestamp="{ts}",serial_no="{serial_no}"'
    )
