"""The WeChat Pay API v3 channel adapter (payments/channels/base.py) over the wire format in wechatpay.py.

`WechatPayAdapter(config)` reads callbacks only; with `merchant=WechatPayMerchant(...)` (and an `httpx.Client`, or
one made here with timeouts) it also calls the API: Native pay, query, close, refund, refund query and the trade
bill. Every request carries our WECHATPAY2-SHA256-RSA2048 Authorization; every answer is verified with the platform
keys like a callback before a byte of it is believed (the bill file itself is unsigned: its SHA1 from the signed
bill answer is checked instead). Outcomes follow base.py: an answer we cannot know or trust (network, timeout, 5xx,
SYSTEM_ERROR, a signature that does not verify, a body we cannot read) is ChannelUnavailable; a signed business
refusal is ChannelDeclined(code, message).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from payments.channels import wechatpay as wx
from payments.channels import wechatpay_bill
from payments.channels.base import (
    ChannelDeclined,
    ChannelEvent,
    ChannelTrade,
    ChannelUnavailable,
    CloseResult,
    Kind,
    PaymentOrderRef,
    PaymentStart,
    RefundEvent,
    RefundOutcome,
    RefundRequest,
    RefundStatus,
    StatementLine,
    TradeStatus,
    VerifiedCallback,
)
from payments.channels.common import Acknowledgement, ChannelRefusal, RefusalReason

NAME = "wechatpay"

_KIND = {
    wx.TradeState.SUCCESS: Kind.PAID,
    wx.TradeState.PAYERROR: Kind.FAILED,
    wx.TradeState.CLOSED: Kind.CLOSED,
    wx.TradeState.REVOKED: Kind.CLOSED,
}


@dataclass(frozen=True)
class WechatPayConfig:
    mchid: str
    platform_keys: wx.PlatformKeys  # certificates and PUB_KEY_ID_ public keys together: both modes verify at once
    # The APIv3 key decrypts every notification: never in a repr, a log or an error.
    apiv3_key: bytes = field(repr=False)
    appid: str | None = None
    max_age_seconds: int = 300
    future_skew_seconds: int = 30

    def __post_init__(self) -> None:
        if len(self.apiv3_key) != 32:
            raise ValueError("the WeChat Pay APIv3 key is 32 bytes")

    @property
    def nonce_ttl(self) -> int:
        # A nonce must be remembered at least as long as a signature with it can pass the window (past and future).
        return self.max_age_seconds + self.future_skew_seconds + 60


DEFAULT_API_BASE = "https://api.mch.weixin.qq.com"

_TRADE_STATUS = {
    wx.TradeState.SUCCESS: TradeStatus.PAID,
    wx.TradeState.REFUND: TradeStatus.PAID,  # paid, then (partly) refunded: the payment itself happened
    wx.TradeState.NOTPAY: TradeStatus.UNPAID,
    wx.TradeState.USERPAYING: TradeStatus.PAYING,
    wx.TradeState.CLOSED: TradeStatus.CLOSED,
    wx.TradeState.REVOKED: TradeStatus.CLOSED,
    wx.TradeState.PAYERROR: TradeStatus.FAILED,
}
_REFUND_OUTCOME = {
    wx.RefundState.SUCCESS: RefundOutcome.SUCCEEDED,
    wx.RefundState.PROCESSING: RefundOutcome.PROCESSING,
    wx.RefundState.ABNORMAL: RefundOutcome.FAILED,  # the money could not reach the payer: not refunded
    wx.RefundState.CLOSED: RefundOutcome.FAILED,
}
_REFUND_EVENT_STATE = {
    "REFUND.SUCCESS": wx.RefundState.SUCCESS,
    "REFUND.ABNORMAL": wx.RefundState.ABNORMAL,
    "REFUND.CLOSED": wx.RefundState.CLOSED,
}
# Error codes that say "try again" rather than "no": the outcome of the request is unknown.
_RETRYABLE = frozenset({"SYSTEM_ERROR", "SYSTEMERROR", "FREQUENCY_LIMITED", "BANK_ERROR", "RULE_LIMIT"})
_NOT_FOUND = frozenset({"ORDER_NOT_EXIST", "ORDERNOTEXIST", "RESOURCE_NOT_EXISTS"})
_PAID = frozenset({"ORDER_PAID", "ORDERPAID"})
_SHA1_HEX = re.compile(r"[0-9a-fA-F]{40}")


@dataclass(frozen=True)
class WechatPayMerchant:
    """What calling the API needs besides the callback config: who we are and the key our requests are signed with."""

    mchid: str
    appid: str
    serial_no: str  # the merchant API certificate's serial, named in every Authorization header
    # The merchant API private key signs every request: never in a repr, a log or an error.
    private_key: rsa.RSAPrivateKey = field(repr=False)
    notify_url: str  # our callback route, e.g. https://sscard.example/v1/payments/callbacks/wechatpay
    api_base: str = DEFAULT_API_BASE

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, rsa.RSAPrivateKey) or self.private_key.key_size < 2048:
            raise ValueError("the WeChat Pay merchant key is an RSA private key of at least 2048 bits")
        if urlsplit(self.api_base).scheme not in ("https", "http") or self.api_base.endswith("/"):
            raise ValueError("api_base is an http(s) origin without a trailing slash")


def default_http_client() -> httpx.Client:
    """Production's client: bounded waits, so an unanswered call becomes ChannelUnavailable, not a stuck worker."""
    return httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0), follow_redirects=False)


def _strict_json(plaintext: bytes) -> dict[str, Any]:
    def refuse(_: str) -> None:
        raise ChannelRefusal(RefusalReason.MALFORMED, "transaction holds a non-finite number")

    # parse_transaction has already accepted it as a JSON object; NaN/Infinity would not store as JSON.
    return json.loads(plaintext, parse_constant=refuse)  # type: ignore[no-any-return]


class WechatPayAdapter:
    name = NAME

    def __init__(
        self,
        config: WechatPayConfig,
        *,
        merchant: WechatPayMerchant | None = None,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if merchant is not None and (
            merchant.mchid != config.mchid or (config.appid is not None and merchant.appid != config.appid)
        ):
            raise ValueError("the merchant's mchid/appid differ from the callback config's")
        self.config = config
        self.merchant = merchant
        self._http = http if http is not None or merchant is None else default_http_client()
        self._clock = clock

    # --- callbacks ---------------------------------------------------------------------------------------------

    def _verify(self, headers: Mapping[str, str], body: bytes, now: float) -> wx.VerifiedCallback:
        """A notification's or an API answer's signature, under the platform keys, inside the time window."""
        config = self.config
        return wx.verify_callback(
            headers,
            body,
            config.platform_keys,
            max_age_seconds=config.max_age_seconds,
            future_skew_seconds=config.future_skew_seconds,
            now=now,
        )

    def read_callback(self, headers: Mapping[str, str], body: bytes, *, now: float) -> VerifiedCallback:
        config = self.config
        verified = self._verify(headers, body, now)
        notification = wx.parse_notification(verified.body)
        if notification.resource_type != "encrypt-resource":
            raise ChannelRefusal(RefusalReason.UNSUPPORTED, "not an encrypted notification")
        original_type = notification.resource.original_type
        if original_type == "transaction":
            event: ChannelEvent | RefundEvent = self._payment_event(notification)
        elif original_type == "refund":
            event = self._refund_event(notification)
        else:
            raise ChannelRefusal(RefusalReason.UNSUPPORTED, "neither a payment nor a refund notification")
        # Single use per signing key: the caller spends it once the whole callback is known good.
        return VerifiedCallback(event, nonce=f"{verified.serial}:{verified.nonce}", nonce_ttl=config.nonce_ttl)

    def _envelope(self, notification: wx.Notification, plaintext: bytes) -> dict[str, Any]:
        return {
            "id": notification.id,
            "event_type": notification.event_type,
            "create_time": notification.create_time.isoformat(),
            "resource": _strict_json(plaintext),
        }

    def _payment_event(self, notification: wx.Notification) -> ChannelEvent:
        config = self.config
        plaintext = wx.decrypt_resource(notification.resource, config.apiv3_key)
        tx = wx.parse_transaction(plaintext, expected_mchid=config.mchid, expected_appid=config.appid)
        return ChannelEvent(
            channel=NAME,
            # Keyed on the transaction and its state rather than the envelope's id: however WeChat Pay wraps a
            # repeat, one state of one transaction is applied once.
            event_id=f"{tx.transaction_id}:{tx.trade_state}",
            order_no=tx.out_trade_no,
            channel_trade_no=tx.transaction_id,
            channel_state=tx.trade_state,
            kind=_KIND.get(tx.trade_state, Kind.OTHER),
            amount_fen=tx.total_fen,
            currency=tx.currency,
            payload=self._envelope(notification, plaintext),
        )

    def _refund_event(self, notification: wx.Notification) -> RefundEvent:
        expected_state = _REFUND_EVENT_STATE.get(notification.event_type)
        if expected_state is None:
            raise ChannelRefusal(RefusalReason.UNSUPPORTED, "unknown refund event_type")
        plaintext = wx.decrypt_resource(notification.resource, self.config.apiv3_key)
        refund = wx.parse_refund(plaintext, expected_mchid=self.config.mchid)
        if refund.state is not expected_state:
            # The envelope is signed and the resource sealed separately; both must say the same thing.
            raise ChannelRefusal(RefusalReason.MALFORMED, "refund_status disagrees with event_type")
        return RefundEvent(
            channel=NAME,
            event_id=f"{refund.refund_id}:{refund.state}",
            refund_no=refund.out_refund_no,
            order_no=refund.out_trade_no,
            channel_refund_no=refund.refund_id,
            outcome=_REFUND_OUTCOME[refund.state],
            amount_fen=refund.refund_fen,
            payload=self._envelope(notification, plaintext),
        )

    def acknowledge(self, refusal: ChannelRefusal | None = None, *, failed: bool = False) -> Acknowledgement:
        if refusal is not None:
            return wx.acknowledge_refusal(refusal)
        if failed:
            return wx.acknowledge_refusal()
        return wx.acknowledge_success()

    # --- API calls ---------------------------------------------------------------------------------------------

    def _api(self) -> tuple[WechatPayMerchant, httpx.Client]:
        if self.merchant is None or self._http is None:
            raise ChannelUnavailable(
                "WeChat Pay merchant config (mchid, appid, serial_no, private_key, notify_url) is not configured"
            )
        return self.merchant, self._http

    def _send(self, method: str, url: str, payload: Mapping[str, Any] | None = None) -> httpx.Response:
        """One signed request; transport failures and 5xx are ChannelUnavailable. `url` is absolute."""
        merchant, http = self._api()
        body = b"" if payload is None else json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        parts = urlsplit(url)
        signed_url = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {
            "Authorization": wx.authorization_header(
                method=method,
                url=signed_url,
                body=body,
                mchid=merchant.mchid,
                serial_no=merchant.serial_no,
                private_key=merchant.private_key,
                timestamp=int(self._clock()),
            ),
            "Accept": "application/json",
            "User-Agent": "sscard-payments",
        }
        if payload is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = http.request(method, url, content=body or None, headers=headers)
        except httpx.HTTPError as exc:  # timeouts, refused connections, resets
            raise ChannelUnavailable(f"WeChat Pay {method} {parts.path}: {type(exc).__name__}") from None
        if response.status_code >= 500:
            raise ChannelUnavailable(f"WeChat Pay {method} {parts.path} answered {response.status_code}")
        return response

    def _call(self, method: str, path: str, payload: Mapping[str, Any] | None = None) -> httpx.Response:
        """A signed request whose answer is verified; a signed 4xx becomes ChannelDeclined (or Unavailable)."""
        merchant, _ = self._api()
        response = self._send(method, merchant.api_base + path, payload)
        try:
            self._verify(response.headers, response.content, self._clock())
        except ChannelRefusal as refusal:
            raise ChannelUnavailable(f"WeChat Pay's answer to {method} does not verify ({refusal.reason})") from None
        if response.status_code >= 300:
            code, message = _error(response)
            if code in _RETRYABLE or response.status_code == 429:
                raise ChannelUnavailable(f"WeChat Pay {method}: {code}")
            if code == "SIGN_ERROR" or response.status_code == 401:
                # Our signature was refused (a merchant key or serial out of date): nothing was done, and it is not
                # the channel's final word on the payment or refund, so callers must not conclude from it.
                raise ChannelUnavailable(f"WeChat Pay refused our request signature ({code}): check the merchant key")
            raise ChannelDeclined(code, message)
        return response

    def create_payment(self, order: PaymentOrderRef) -> PaymentStart:
        merchant, _ = self._api()
        if order.expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware")
        payload = {
            "appid": merchant.appid,
            "mchid": merchant.mchid,
            "description": order.description[:127],
            "out_trade_no": _order_no(order.order_no),
            "time_expire": order.expires_at.astimezone(wechatpay_bill.CHINA).isoformat(timespec="seconds"),
            "notify_url": order.notify_url or merchant.notify_url,
            "amount": {"total": order.amount_fen, "currency": "CNY"},
        }
        obj = _json(self._call("POST", "/v3/pay/transactions/native", payload))
        code_url = obj.get("code_url")
        if not isinstance(code_url, str) or not code_url.startswith("weixin://") or len(code_url) > 512:
            raise ChannelUnavailable("WeChat Pay's Native answer has no code_url")
        return PaymentStart(order.order_no, "qr_code", {"code_url": code_url})

    def query_payment(self, order_no: str) -> ChannelTrade:
        merchant, _ = self._api()
        path = f"/v3/pay/transactions/out-trade-no/{_order_no(order_no)}?mchid={merchant.mchid}"
        try:
            response = self._call("GET", path)
        except ChannelDeclined as declined:
            if declined.code in _NOT_FOUND:
                return ChannelTrade(order_no, TradeStatus.NOT_FOUND)
            raise
        try:
            tx = wx.parse_transaction(
                response.content, expected_mchid=merchant.mchid, expected_appid=merchant.appid, queried=True
            )
        except ChannelRefusal as refusal:
            raise ChannelUnavailable(f"WeChat Pay's query answer is not understood ({refusal.reason})") from None
        if tx.out_trade_no != order_no:
            raise ChannelUnavailable("WeChat Pay's query answer is about another order")
        return ChannelTrade(
            order_no=order_no,
            status=_TRADE_STATUS[tx.trade_state],
            amount_fen=tx.total_fen,
            channel_trade_no=tx.transaction_id or None,
            paid_at=tx.success_time,
            currency=tx.currency,
            raw_state=tx.trade_state,
        )

    def close_payment(self, order_no: str) -> CloseResult:
        merchant, _ = self._api()
        path = f"/v3/pay/transactions/out-trade-no/{_order_no(order_no)}/close"
        try:
            self._call("POST", path, {"mchid": merchant.mchid})
        except ChannelDeclined as declined:
            if declined.code in _PAID:
                return CloseResult.ALREADY_PAID
            if declined.code in _NOT_FOUND:
                return CloseResult.NOT_FOUND
            if declined.code == "ORDER_CLOSED":
                return CloseResult.CLOSED
            raise
        return CloseResult.CLOSED

    def refund(self, request: RefundRequest) -> RefundStatus:
        merchant, _ = self._api()
        payload = {
            "out_trade_no": _order_no(request.order_no),
            "out_refund_no": request.refund_no,
            "reason": request.reason[:80],
            "notify_url": request.notify_url or merchant.notify_url,
            "amount": {"refund": request.amount_fen, "total": request.order_amount_fen, "currency": "CNY"},
        }
        refund = self._refund_answer(self._call("POST", "/v3/refund/domestic/refunds", payload), request.order_no)
        if refund.out_refund_no != request.refund_no or refund.refund_fen != request.amount_fen:
            raise ChannelUnavailable("WeChat Pay's refund answer is about another refund or amount")
        return _refund_status(refund)

    def query_refund(self, order_no: str, refund_no: str) -> RefundStatus:
        if not wx.is_out_refund_no(refund_no):  # it goes into a URL path
            raise ValueError("refund_no is not a WeChat Pay out_refund_no")
        refund = self._refund_answer(self._call("GET", f"/v3/refund/domestic/refunds/{refund_no}"), order_no)
        if refund.out_refund_no != refund_no:
            raise ChannelUnavailable("WeChat Pay's refund answer is about another refund")
        return _refund_status(refund)

    def _refund_answer(self, response: httpx.Response, order_no: str) -> wx.Refund:
        try:
            refund = wx.parse_refund(response.content, status_field="status")
        except ChannelRefusal as refusal:
            raise ChannelUnavailable(f"WeChat Pay's refund answer is not understood ({refusal.reason})") from None
        if refund.out_trade_no != order_no:
            raise ChannelUnavailable("WeChat Pay's refund answer is about another order")
        return refund

    def fetch_statement(self, day: date) -> bytes:
        merchant, _ = self._api()
        obj = _json(self._call("GET", f"/v3/bill/tradebill?bill_date={day.isoformat()}&bill_type=ALL"))
        hash_type, hash_value, url = obj.get("hash_type"), obj.get("hash_value"), obj.get("download_url")
        if hash_type != "SHA1" or not isinstance(hash_value, str) or not _SHA1_HEX.fullmatch(hash_value):
            raise ChannelUnavailable("WeChat Pay's bill answer lacks a SHA1 hash")
        if not isinstance(url, str):
            raise ChannelUnavailable("WeChat Pay's bill answer lacks a download_url")
        # The download is signed with our key too: it may only go to WeChat Pay's own origin, never elsewhere.
        own, given = urlsplit(merchant.api_base), urlsplit(url)
        if (given.scheme, given.netloc) != (own.scheme, own.netloc) or not given.path.startswith("/v3/billdownload/"):
            raise ChannelUnavailable("WeChat Pay's download_url is not on the API origin")
        response = self._send("GET", url)
        if response.status_code != 200:
            raise ChannelUnavailable(f"WeChat Pay's bill download answered {response.status_code}")
        # The file is not signed; its hash came in the signed answer above.
        digest = hashlib.sha1(response.content, usedforsecurity=False).hexdigest()
        if not hmac.compare_digest(digest, hash_value.lower()):
            raise ChannelUnavailable("the downloaded bill does not match the hash WeChat Pay signed")
        return response.content

    def parse_statement(self, data: Iterable[bytes]) -> Iterator[StatementLine]:
        return wechatpay_bill.parse(data)


def _order_no(order_no: str) -> str:
    # It goes into a URL path: only WeChat Pay's out_trade_no alphabet, never a '/' or '?'.
    if not wx.is_out_trade_no(order_no):
        raise ValueError("not a WeChat Pay out_trade_no")
    return order_no


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        obj = json.loads(response.content)
    except ValueError:
        raise ChannelUnavailable("WeChat Pay's answer is not JSON") from None
    if not isinstance(obj, dict):
        raise ChannelUnavailable("WeChat Pay's answer is not a JSON object")
    return obj


def _error(response: httpx.Response) -> tuple[str, str]:
    try:
        obj = json.loads(response.content)
    except ValueError:
        obj = None
    code = obj.get("code") if isinstance(obj, dict) else None
    message = obj.get("message") if isinstance(obj, dict) else None
    if not isinstance(code, str) or not code:
        raise ChannelUnavailable(f"WeChat Pay answered {response.status_code} without an error code")
    return code[:64], message[:256] if isinstance(message, str) else ""


def _refund_status(refund: wx.Refund) -> RefundStatus:
    return RefundStatus(
        refund_no=refund.out_refund_no,
        outcome=_REFUND_OUTCOME[refund.state],
        amount_fen=refund.refund_fen,
        channel_refund_no=refund.refund_id,
        raw_state=refund.state,
    )
