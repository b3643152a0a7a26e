"""An in-memory WeChat Pay API v3 that behaves like the real one over HTTP, faults on request.

`WechatPaySandbox().app` serves Native pay, query, close, refund, refund query, the trade bill and its download, and
`GET /v3/certificates`. Every request's Authorization header is verified with the merchant's public key (a bad one is
401 SIGN_ERROR); every answer is signed with the platform key of the chosen mode (a platform certificate, or a
`PUB_KEY_ID_` platform public key). Driver methods stand in for the payer and for WeChat Pay's back office: `pay`,
`fail`, `settle_refund`, `bill`. Notifications are signed, AES-GCM-encrypted under the APIv3 key and handed to an
injectable `sender(url, headers, body) -> status`; a non-2xx answer is retried (each attempt signed afresh, as WeChat
Pay does), immediately rather than on WeChat Pay's 15 s … 24 h schedule, so that tests need no clock.

Faults: `fail_next(n, how)` for API calls (500 SYSTEM_ERROR, a timeout, an answer signed with a wrong key, an unsigned
answer); per notification `delivery=` "none" (never sent), "twice" (duplicate), "bad_signature", "stale";
`hold_callbacks` + `release_callbacks(reverse=True)` for out-of-order delivery; `pay(amount_fen=...)` for a charge
of another amount than ordered; `bill_faults` ("extra_line", "missing_line", "wrong_amount", "bad_hash").

Run on its own: `python -m payments.sandbox.wechatpay --port 18100` prints its merchant and platform configuration
(sandbox-generated keys, test material only) as JSON, then serves.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request, Response

from payments.channels import wechatpay as wx
from payments.channels.base import LineKind
from payments.channels.wechatpay_bill import CHINA, BillRow, render

Sender = Callable[[str, dict[str, str], bytes], int]

_AUTH = re.compile(r'WECHATPAY2-SHA256-RSA2048 ((?:[a-z_]+="[^"]*",?)+)')
_AUTH_PARAM = re.compile(r'([a-z_]+)="([^"]*)"')
AUTH_WINDOW_SECONDS = 300  # WeChat Pay refuses a request timestamp more than 5 minutes off


def _default_sender(url: str, headers: dict[str, str], body: bytes) -> int:
    try:
        return httpx.post(url, content=body, headers=headers, timeout=5.0).status_code
    except httpx.HTTPError:
        return 599  # no answer: retried like any failure


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_public(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _rfc3339(at: datetime) -> str:
    return at.astimezone(CHINA).isoformat(timespec="seconds")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status, self.code, self.message = status, code, message


@dataclass
class Trade:
    out_trade_no: str
    description: str
    amount_fen: int  # what the order asked
    notify_url: str
    time_expire: str | None
    code_url: str
    state: str = "NOTPAY"
    transaction_id: str | None = None
    charged_fen: int | None = None  # what the payer was charged (a fault may make it differ)
    success_time: datetime | None = None
    refunded_fen: int = 0


@dataclass
class SandboxRefund:
    out_refund_no: str
    out_trade_no: str
    refund_id: str
    amount_fen: int
    total_fen: int
    notify_url: str
    created: datetime
    status: str = "PROCESSING"
    success_time: datetime | None = None


@dataclass
class Delivery:
    url: str
    event_type: str
    status: int
    attempt: int


@dataclass
class WechatPaySandbox:
    mchid: str = "1900000109"
    appid: str = "wxd678efh567hg6787"
    mode: str = "public_key"  # which platform key signs: "public_key" (PUB_KEY_ID_) or "certificate"
    clock: Callable[[], float] = time.time
    sender: Sender = _default_sender
    max_attempts: int = 8
    merchant_serial: str = "3775B6A45ACD588826D15E583A95F5DD8A8E4A2C"
    # The merchant's key pair lives with the merchant; the sandbox makes one for tests and standalone runs, or is
    # given the merchant's public key.
    merchant_private_key: rsa.RSAPrivateKey | None = field(default=None, repr=False)
    merchant_public_key: rsa.RSAPublicKey | None = field(default=None, repr=False)
    apiv3_key: bytes = field(default_factory=lambda: secrets.token_hex(16).encode("ascii"), repr=False)
    public_key_id: str = "PUB_KEY_ID_0119000010920261128000000000"

    def __post_init__(self) -> None:
        if self.mode not in ("public_key", "certificate"):
            raise ValueError("mode is public_key or certificate")
        if self.merchant_public_key is None:
            if self.merchant_private_key is None:
                self.merchant_private_key = _rsa()
            self.merchant_public_key = self.merchant_private_key.public_key()
        self.platform_public_key = _rsa()
        self.platform_cert_key = _rsa()
        self.platform_certificate = self._certificate(self.platform_cert_key)
        self.certificate_serial = format(self.platform_certificate.serial_number, "X")
        self.retired_certificates: list[x509.Certificate] = []  # still listed by /v3/certificates, no longer signing
        self.trades: dict[str, Trade] = {}
        self.refunds: dict[str, SandboxRefund] = {}
        self.deliveries: list[Delivery] = []
        self.held: list[tuple[str, str, dict[str, Any]]] = []  # (url, event_type, envelope) awaiting release
        self.hold_callbacks = False
        self.bill_faults: set[str] = set()
        self.balance_short = False  # refunds answer 403 NOT_ENOUGH (the merchant's balance cannot cover them)
        self.requests: list[tuple[str, str]] = []  # (method, path) of every authenticated API call
        self._faults: list[str] = []
        self._auth_nonces: dict[tuple[str, str], int] = {}  # (nonce, timestamp) → timestamp, inside the window
        self._downloads: dict[str, bytes] = {}
        self._lock = threading.RLock()
        self.app = self._build_app()

    # --- configuration -------------------------------------------------------------------------------------------

    def _certificate(self, key: rsa.RSAPrivateKey) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com sandbox platform certificate")])
        start = datetime.fromtimestamp(self.clock(), UTC) - timedelta(days=1)
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=1825))
            .sign(key, hashes.SHA256())
        )

    def rotate_certificate(self) -> str:
        """A new platform certificate signs from now on (in certificate mode); the old one stays listed until it
        expires, as during WeChat Pay's rotations. Returns the new serial."""
        with self._lock:
            self.retired_certificates.append(self.platform_certificate)
            self.platform_cert_key = _rsa()
            self.platform_certificate = self._certificate(self.platform_cert_key)
            self.certificate_serial = format(self.platform_certificate.serial_number, "X")
            return self.certificate_serial

    @property
    def certificate_pem(self) -> bytes:
        return self.platform_certificate.public_bytes(serialization.Encoding.PEM)

    def platform_keys(self) -> wx.PlatformKeys:
        """Both of the sandbox's platform keys, as a merchant configures them."""
        return wx.PlatformKeys.of(
            *(
                wx.PlatformKeys.certificate_entry(cert.public_bytes(serialization.Encoding.PEM))
                for cert in self.retired_certificates
            ),
            wx.PlatformKeys.certificate_entry(self.certificate_pem),
            wx.PlatformKeys.public_key_entry(self.public_key_id, _pem_public(self.platform_public_key)),
        )

    def _signer(self) -> tuple[str, rsa.RSAPrivateKey]:
        if self.mode == "certificate":
            return self.certificate_serial, self.platform_cert_key
        return self.public_key_id, self.platform_public_key

    def describe(self) -> dict[str, Any]:
        """The configuration a service needs to talk to this sandbox (sandbox test keys, printed on purpose)."""
        merchant_pem = (
            self.merchant_private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode()
            if self.merchant_private_key is not None
            else None
        )
        return {
            "mchid": self.mchid,
            "appid": self.appid,
            "mode": self.mode,
            "merchant_serial": self.merchant_serial,
            "merchant_private_key_pem": merchant_pem,
            "apiv3_key": self.apiv3_key.decode("ascii"),
            "platform_certificate_serial": self.certificate_serial,
            "platform_certificate_pem": self.certificate_pem.decode(),
            "platform_public_key_id": self.public_key_id,
            "platform_public_key_pem": _pem_public(self.platform_public_key).decode(),
        }

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # --- faults ----------------------------------------------------------------------------------------------------

    def fail_next(self, n: int = 1, how: str = "error") -> None:
        """The next `n` API calls fail: "error" (500 SYSTEM_ERROR), "timeout" (no answer: httpx.ReadTimeout for an
        in-process client), "bad_signature" (signed with a key that is not the platform's), "unsigned"."""
        if how not in ("error", "timeout", "bad_signature", "unsigned"):
            raise ValueError(f"unknown fault {how}")
        with self._lock:
            self._faults.extend([how] * n)

    # --- the payer and the back office -----------------------------------------------------------------------------

    def pay(self, out_trade_no: str, *, amount_fen: int | None = None, delivery: str = "normal") -> str:
        """The payer scans the code and pays: SUCCESS, then the notification. `amount_fen` charges another amount
        than ordered (a fault); returns the transaction_id."""
        with self._lock:
            trade = self._trade(out_trade_no)
            if trade.state not in ("NOTPAY", "USERPAYING", "PAYERROR"):
                raise ValueError(f"cannot pay a trade in state {trade.state}")
            trade.state = "SUCCESS"
            trade.transaction_id = trade.transaction_id or _number("42")
            trade.charged_fen = trade.amount_fen if amount_fen is None else amount_fen
            trade.success_time = self._now()
            resource = self._transaction(trade)
        self._notify(trade.notify_url, "TRANSACTION.SUCCESS", "支付成功", "transaction", resource, delivery)
        return trade.transaction_id

    def fail(self, out_trade_no: str, *, delivery: str = "normal") -> None:
        """The payment fails (PAYERROR: a card declined, a risk check) and WeChat Pay says so."""
        with self._lock:
            trade = self._trade(out_trade_no)
            trade.state = "PAYERROR"
            trade.transaction_id = trade.transaction_id or _number("42")
            resource = self._transaction(trade)
        self._notify(trade.notify_url, "TRANSACTION.PAYERROR", "支付失败", "transaction", resource, delivery)

    def paying(self, out_trade_no: str) -> None:
        """The payer scanned and is confirming (USERPAYING); no notification."""
        with self._lock:
            self._trade(out_trade_no).state = "USERPAYING"

    def settle_refund(self, out_refund_no: str, status: str = "SUCCESS", *, delivery: str = "normal") -> None:
        """The refund ends: SUCCESS, ABNORMAL (the payer's card cannot take it) or CLOSED; the notification
        follows."""
        if status not in ("SUCCESS", "ABNORMAL", "CLOSED"):
            raise ValueError("a refund ends SUCCESS, ABNORMAL or CLOSED")
        with self._lock:
            refund = self.refunds[out_refund_no]
            if refund.status != "PROCESSING":
                raise ValueError(f"the refund is already {refund.status}")
            refund.status = status
            refund.success_time = self._now() if status == "SUCCESS" else None
            if status != "SUCCESS":
                self.trades[refund.out_trade_no].refunded_fen -= refund.amount_fen
            resource = self._refund_resource(refund)
        summary = {"SUCCESS": "退款成功", "ABNORMAL": "退款异常", "CLOSED": "退款关闭"}[status]
        self._notify(refund.notify_url, f"REFUND.{status}", summary, "refund", resource, delivery)

    def release_callbacks(self, *, reverse: bool = False) -> int:
        """Deliver the notifications held while `hold_callbacks` was set, in order or reversed."""
        with self._lock:
            held, self.held = self.held, []
        for url, event_type, envelope in reversed(held) if reverse else held:
            self._deliver(url, event_type, envelope)
        return len(held)

    def bill(self, day: date, faults: set[str] | None = None) -> bytes:
        """The day's ALL trade bill (China-time day): payments by their success time, refunds by their request."""
        faults = self.bill_faults if faults is None else faults
        with self._lock:
            rows = [
                BillRow(
                    t.success_time,
                    t.transaction_id or "",
                    t.out_trade_no,
                    t.charged_fen or t.amount_fen,
                    appid=self.appid,
                    mchid=self.mchid,
                    fee_fen=(t.charged_fen or t.amount_fen) * 6 // 1000,
                    description=t.description.replace(",", " "),
                )
                for t in self.trades.values()
                if t.success_time is not None and t.success_time.astimezone(CHINA).date() == day
            ]
            rows += [
                BillRow(
                    r.created,
                    self.trades[r.out_trade_no].transaction_id or "",
                    r.out_trade_no,
                    r.amount_fen,
                    LineKind.REFUND,
                    refund_id=r.refund_id,
                    out_refund_no=r.out_refund_no,
                    refund_status=r.status,
                    appid=self.appid,
                    mchid=self.mchid,
                )
                for r in self.refunds.values()
                if r.created.astimezone(CHINA).date() == day
            ]
        rows.sort(key=lambda r: r.occurred_at)
        if "missing_line" in faults and rows:
            rows.pop(0)
        if "wrong_amount" in faults and rows:
            rows[0] = BillRow(**{**_fields(rows[0]), "amount_fen": rows[0].amount_fen + 1})
        if "extra_line" in faults:
            at = datetime.combine(day, datetime.min.time(), CHINA) + timedelta(hours=12)
            rows.append(
                BillRow(at, _number("42"), "SANDBOX" + secrets.token_hex(6), 100, appid=self.appid, mchid=self.mchid)
            )
        return b"".join(render(rows))

    # --- notifications -------------------------------------------------------------------------------------------

    def _transaction(self, trade: Trade) -> dict[str, Any]:
        body: dict[str, Any] = {
            "appid": self.appid,
            "mchid": self.mchid,
            "out_trade_no": trade.out_trade_no,
            "trade_type": "NATIVE",
            "trade_state": trade.state,
            "trade_state_desc": trade.state,
            "amount": {"total": trade.amount_fen, "currency": "CNY"},
        }
        if trade.transaction_id is not None:
            body["transaction_id"] = trade.transaction_id
        if trade.state in ("SUCCESS", "REFUND"):
            charged = trade.charged_fen or trade.amount_fen
            body["amount"] = {"total": charged, "payer_total": charged, "currency": "CNY", "payer_currency": "CNY"}
            body["bank_type"] = "OTHERS"
            body["payer"] = {"openid": "oSandboxPayer" + trade.out_trade_no[-6:]}
            body["success_time"] = _rfc3339(trade.success_time or self._now())
        return body

    def _refund_resource(self, refund: SandboxRefund) -> dict[str, Any]:
        trade = self.trades[refund.out_trade_no]
        body: dict[str, Any] = {
            "mchid": self.mchid,
            "out_trade_no": refund.out_trade_no,
            "transaction_id": trade.transaction_id,
            "out_refund_no": refund.out_refund_no,
            "refund_id": refund.refund_id,
            "refund_status": refund.status,
            "user_received_account": "支付用户零钱",
            "amount": {
                "total": refund.total_fen,
                "refund": refund.amount_fen,
                "payer_total": refund.total_fen,
                "payer_refund": refund.amount_fen,
            },
        }
        if refund.success_time is not None:
            body["success_time"] = _rfc3339(refund.success_time)
        return body

    def _notify(
        self, url: str, event_type: str, summary: str, original_type: str, resource: dict[str, Any], delivery: str
    ) -> None:
        if delivery not in ("normal", "none", "twice", "bad_signature", "stale"):
            raise ValueError(f"unknown delivery {delivery}")
        envelope = {
            "id": "EV-" + secrets.token_hex(10),
            "create_time": _rfc3339(self._now()),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": wx.encrypt_resource(
                json.dumps(resource, ensure_ascii=False).encode(),
                self.apiv3_key,
                nonce=secrets.token_urlsafe(9)[:12],
                associated_data=original_type,
                original_type=original_type,
            ),
        }
        if delivery == "none":
            return
        if delivery in ("bad_signature", "stale"):
            self._deliver(url, event_type, envelope, how=delivery)
            return
        for _ in range(2 if delivery == "twice" else 1):
            with self._lock:
                if self.hold_callbacks:
                    self.held.append((url, event_type, envelope))
                    continue
            self._deliver(url, event_type, envelope)

    def signed_notification(self, envelope: dict[str, Any], *, how: str = "normal") -> tuple[dict[str, str], bytes]:
        """One delivery of a notification: the body as WeChat Pay sends it and freshly signed headers."""
        body = json.dumps(envelope, ensure_ascii=False, indent=4).encode()
        serial, key = self._signer()
        timestamp = int(self.clock()) - (3600 if how == "stale" else 0)
        if how == "bad_signature":
            key = _rsa()
        headers = wx.platform_signature_headers(key, serial, body, timestamp=timestamp, nonce=secrets.token_hex(16))
        return {**headers, "Content-Type": "application/json"}, body

    def _deliver(self, url: str, event_type: str, envelope: dict[str, Any], *, how: str = "normal") -> None:
        # WeChat Pay retries until it gets a 2xx; a forged or stale one is sent once (a retry would be signed anew).
        attempts = self.max_attempts if how == "normal" else 1
        for attempt in range(1, attempts + 1):
            headers, body = self.signed_notification(envelope, how=how)
            status = self.sender(url, headers, body)
            with self._lock:
                self.deliveries.append(Delivery(url, event_type, status, attempt))
            if 200 <= status < 300:
                return

    # --- the API ---------------------------------------------------------------------------------------------------

    def _trade(self, out_trade_no: str) -> Trade:
        trade = self.trades.get(out_trade_no)
        if trade is None:
            raise ApiError(404, "ORDER_NOT_EXIST", "订单不存在")
        return trade

    def _answer(self, status: int, body: bytes, *, fault: str | None) -> Response:
        serial, key = self._signer()
        headers: dict[str, str] = {}
        if fault != "unsigned":
            signer = _rsa() if fault == "bad_signature" else key
            headers = wx.platform_signature_headers(
                signer, serial, body, timestamp=int(self.clock()), nonce=secrets.token_hex(16)
            )
        headers["Request-ID"] = secrets.token_hex(16)
        media_type = "application/json" if body else None
        return Response(content=body, status_code=status, headers=headers, media_type=media_type)

    def _authenticate(self, request: Request, body: bytes) -> None:
        header = request.headers.get("authorization", "")
        match = _AUTH.fullmatch(header.strip())
        if match is None:
            raise ApiError(401, "SIGN_ERROR", "Authorization 头缺失或格式错误")
        params = dict(_AUTH_PARAM.findall(match.group(1)))
        if {"mchid", "nonce_str", "signature", "timestamp", "serial_no"} - params.keys():
            raise ApiError(401, "SIGN_ERROR", "Authorization 缺少参数")
        if params["mchid"] != self.mchid or params["serial_no"] != self.merchant_serial:
            raise ApiError(401, "SIGN_ERROR", "商户号或证书序列号不匹配")
        if not params["timestamp"].isdigit() or abs(int(params["timestamp"]) - self.clock()) > AUTH_WINDOW_SECONDS:
            raise ApiError(401, "SIGN_ERROR", "请求时间戳超出有效期")
        url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        message = wx.request_message(request.method, url, params["timestamp"], params["nonce_str"], body)
        try:
            signature = base64.b64decode(params["signature"], validate=True)
            assert self.merchant_public_key is not None
            self.merchant_public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            raise ApiError(401, "SIGN_ERROR", "签名错误") from None
        with self._lock:
            nonce = (params["nonce_str"], params["timestamp"])
            if nonce in self._auth_nonces:
                raise ApiError(401, "SIGN_ERROR", "重复的请求")
            if len(self._auth_nonces) > 10_000:  # a long-running sandbox forgets what the window refuses anyway
                oldest = self.clock() - AUTH_WINDOW_SECONDS
                self._auth_nonces = {k: ts for k, ts in self._auth_nonces.items() if ts >= oldest}
            self._auth_nonces[nonce] = int(params["timestamp"])
            self.requests.append((request.method, request.url.path))

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="WeChat Pay API v3 sandbox", openapi_url=None, docs_url=None, redoc_url=None)
        routes: list[tuple[str, str, Callable[..., Any]]] = [
            ("POST", "/v3/pay/transactions/native", self._native),
            ("GET", "/v3/pay/transactions/out-trade-no/{out_trade_no}", self._query),
            ("POST", "/v3/pay/transactions/out-trade-no/{out_trade_no}/close", self._close),
            ("POST", "/v3/refund/domestic/refunds", self._refund),
            ("GET", "/v3/refund/domestic/refunds/{out_refund_no}", self._refund_query),
            ("GET", "/v3/bill/tradebill", self._tradebill),
            ("GET", "/v3/billdownload/file", self._download),
            ("GET", "/v3/certificates", self._certificates),
        ]
        for method, path, handler in routes:
            app.add_api_route(path, self._endpoint(handler), methods=[method], response_class=Response)
        self._driver_routes(app)
        return app

    def _endpoint(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            with self._lock:
                fault = self._faults.pop(0) if self._faults else None
            if fault == "timeout":
                raise httpx.ReadTimeout("sandbox: the answer never comes")
            try:
                self._authenticate(request, body)
                if fault == "error":
                    raise ApiError(500, "SYSTEM_ERROR", "系统异常,请稍后重试")
                payload: dict[str, Any] = {}
                if body:
                    loaded = json.loads(body)
                    if not isinstance(loaded, dict):
                        raise ApiError(400, "PARAM_ERROR", "请求体不是 JSON 对象")
                    payload = loaded
                with self._lock:
                    result = handler(request, payload)
            except ValueError:  # JSON that does not parse
                return self._answer(400, _error("PARAM_ERROR", "请求体不是合法的 JSON"), fault=fault)
            except ApiError as err:
                return self._answer(err.status, _error(err.code, err.message), fault=fault)
            if isinstance(result, Response):
                return result
            if result is None:
                return self._answer(204, b"", fault=fault)
            return self._answer(200, json.dumps(result, ensure_ascii=False).encode(), fault=fault)

        return endpoint

    def _native(self, request: Request, req: dict[str, Any]) -> dict[str, Any]:
        if req.get("mchid") != self.mchid:
            raise ApiError(400, "MCH_NOT_EXISTS", "商户号不存在")
        if req.get("appid") != self.appid:
            raise ApiError(400, "APPID_MCHID_NOT_MATCH", "AppID和mch_id不匹配")
        out_trade_no, description = req.get("out_trade_no"), req.get("description")
        notify_url, time_expire = req.get("notify_url"), req.get("time_expire")
        amount = req.get("amount")
        total = amount.get("total") if isinstance(amount, dict) else None
        if not (
            isinstance(out_trade_no, str)
            and wx.is_out_trade_no(out_trade_no)
            and isinstance(description, str)
            and 0 < len(description) <= 127
            and isinstance(notify_url, str)
            and notify_url.startswith(("https://", "http://"))
            and isinstance(time_expire, str | None)  # optional: WeChat Pay's default is two hours
            and type(total) is int
            and total >= 1
            and isinstance(amount, dict)
            and amount.get("currency", "CNY") == "CNY"
        ):
            raise ApiError(400, "PARAM_ERROR", "参数错误")
        existing = self.trades.get(out_trade_no)
        if existing is not None:
            if existing.state in ("SUCCESS", "REFUND"):
                raise ApiError(400, "ORDER_PAID", "订单已支付")
            if existing.state == "CLOSED":
                raise ApiError(400, "ORDER_CLOSED", "订单已关闭")
            if existing.amount_fen != total or existing.description != description:
                raise ApiError(403, "OUT_TRADE_NO_USED", "商户订单号重复")
            return {"code_url": existing.code_url}  # the same order again: the same code
        trade = Trade(
            out_trade_no,
            description,
            total,
            notify_url,
            time_expire,
            code_url="weixin://wxpay/bizpayurl?pr=" + secrets.token_urlsafe(8),
        )
        self.trades[out_trade_no] = trade
        return {"code_url": trade.code_url}

    def _query(self, request: Request, req: dict[str, Any]) -> dict[str, Any]:
        if request.query_params.get("mchid") != self.mchid:
            raise ApiError(400, "PARAM_ERROR", "mchid 与请求方不符")
        return self._transaction(self._trade(request.path_params["out_trade_no"]))

    def _close(self, request: Request, req: dict[str, Any]) -> None:
        if req.get("mchid") != self.mchid:
            raise ApiError(400, "PARAM_ERROR", "mchid 与请求方不符")
        trade = self._trade(request.path_params["out_trade_no"])
        if trade.state in ("SUCCESS", "REFUND"):
            raise ApiError(400, "ORDER_PAID", "订单已支付")
        trade.state = "CLOSED"
        return None

    def _refund(self, request: Request, req: dict[str, Any]) -> dict[str, Any]:
        out_trade_no, out_refund_no = req.get("out_trade_no"), req.get("out_refund_no")
        amount = req.get("amount")
        refund_fen = amount.get("refund") if isinstance(amount, dict) else None
        total_fen = amount.get("total") if isinstance(amount, dict) else None
        if not (
            isinstance(out_trade_no, str)
            and isinstance(out_refund_no, str)
            and re.fullmatch(r"[0-9A-Za-z_\-*|@]{1,64}", out_refund_no)
            and type(refund_fen) is int
            and type(total_fen) is int
            and refund_fen >= 1
            and isinstance(amount, dict)
            and amount.get("currency") == "CNY"
        ):
            raise ApiError(400, "PARAM_ERROR", "参数错误")
        trade = self.trades.get(out_trade_no)
        if trade is None:
            raise ApiError(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        existing = self.refunds.get(out_refund_no)
        if existing is not None:
            if existing.out_trade_no != out_trade_no or existing.amount_fen != refund_fen:
                raise ApiError(400, "INVALID_REQUEST", "商户退款单号重复")
            return self._refund_answer(existing)
        if trade.state not in ("SUCCESS", "REFUND"):
            raise ApiError(400, "INVALID_REQUEST", "订单未支付")
        charged = trade.charged_fen or trade.amount_fen
        if total_fen != charged:
            raise ApiError(400, "PARAM_ERROR", "订单金额与原订单不符")
        if trade.refunded_fen + refund_fen > charged:
            raise ApiError(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额")
        if self.balance_short:
            raise ApiError(403, "NOT_ENOUGH", "基本账户余额不足")
        refund = SandboxRefund(
            out_refund_no,
            out_trade_no,
            _number("50"),
            refund_fen,
            total_fen,
            req.get("notify_url") or trade.notify_url,
            self._now(),
        )
        self.refunds[out_refund_no] = refund
        trade.refunded_fen += refund_fen
        trade.state = "REFUND"
        return self._refund_answer(refund)

    def _refund_answer(self, refund: SandboxRefund) -> dict[str, Any]:
        trade = self.trades[refund.out_trade_no]
        body: dict[str, Any] = {
            "refund_id": refund.refund_id,
            "out_refund_no": refund.out_refund_no,
            "transaction_id": trade.transaction_id,
            "out_trade_no": refund.out_trade_no,
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": _rfc3339(refund.created),
            "status": refund.status,
            "funds_account": "AVAILABLE",
            "amount": {
                "total": refund.total_fen,
                "refund": refund.amount_fen,
                "payer_total": refund.total_fen,
                "payer_refund": refund.amount_fen,
                "settlement_refund": refund.amount_fen,
                "settlement_total": refund.total_fen,
                "discount_refund": 0,
                "currency": "CNY",
            },
        }
        if refund.success_time is not None:
            body["success_time"] = _rfc3339(refund.success_time)
        return body

    def _refund_query(self, request: Request, req: dict[str, Any]) -> dict[str, Any]:
        refund = self.refunds.get(request.path_params["out_refund_no"])
        if refund is None:
            raise ApiError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        return self._refund_answer(refund)

    def _tradebill(self, request: Request, req: dict[str, Any]) -> dict[str, Any]:
        try:
            day = date.fromisoformat(request.query_params.get("bill_date", ""))
        except ValueError:
            raise ApiError(400, "PARAM_ERROR", "bill_date 格式错误") from None
        if request.query_params.get("bill_type", "ALL") != "ALL":
            raise ApiError(400, "PARAM_ERROR", "sandbox 只提供 ALL 账单")
        if day >= self._now().astimezone(CHINA).date():
            raise ApiError(400, "NO_STATEMENT_EXIST", "账单尚未生成")
        data = self.bill(day)
        token = secrets.token_urlsafe(12)
        served = data + b"`tampered\r\n" if "bad_hash" in self.bill_faults else data
        self._downloads[token] = served
        return {
            "hash_type": "SHA1",
            "hash_value": hashlib.sha1(data, usedforsecurity=False).hexdigest(),
            "download_url": f"{str(request.base_url).rstrip('/')}/v3/billdownload/file?token={token}",
        }

    def _download(self, request: Request, req: dict[str, Any]) -> Response:
        data = self._downloads.get(request.query_params.get("token", ""))
        if data is None:
            raise ApiError(404, "RESOURCE_NOT_EXISTS", "下载链接已失效")
        # The file is not signed (its hash came in the signed tradebill answer), as on the real API.
        return Response(content=data, media_type="application/octet-stream")

    def _certificates(self, request: Request, req: dict[str, Any]) -> dict[str, Any]:
        data = []
        for cert in [*self.retired_certificates, self.platform_certificate]:
            resource = wx.encrypt_resource(
                cert.public_bytes(serialization.Encoding.PEM),
                self.apiv3_key,
                nonce=secrets.token_urlsafe(9)[:12],
                associated_data="certificate",
                original_type="certificate",
            )
            del resource["original_type"]
            data.append(
                {
                    "serial_no": format(cert.serial_number, "X"),
                    "effective_time": _rfc3339(cert.not_valid_before_utc),
                    "expire_time": _rfc3339(cert.not_valid_after_utc),
                    "encrypt_certificate": resource,
                }
            )
        return {"data": data}

    def _driver_routes(self, app: FastAPI) -> None:
        """Unauthenticated /sandbox/ routes for a person driving a standalone sandbox (never on the real API)."""

        def pay(out_trade_no: str) -> dict[str, str]:
            return {"transaction_id": self.pay(out_trade_no)}

        def fail(out_trade_no: str) -> dict[str, str]:
            self.fail(out_trade_no)
            return {"trade_state": "PAYERROR"}

        def settle(out_refund_no: str, status: str = "SUCCESS") -> dict[str, str]:
            self.settle_refund(out_refund_no, status)
            return {"refund_status": status}

        app.add_api_route("/sandbox/pay/{out_trade_no}", pay, methods=["POST"])
        app.add_api_route("/sandbox/fail/{out_trade_no}", fail, methods=["POST"])
        app.add_api_route("/sandbox/refunds/{out_refund_no}/settle", settle, methods=["POST"])


def _fields(row: BillRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in BillRow.__dataclass_fields__}


def _error(code: str, message: str) -> bytes:
    return json.dumps({"code": code, "message": message}, ensure_ascii=False).encode()


def _number(prefix: str) -> str:
    return prefix + datetime.now(UTC).strftime("%Y%m%d") + "".join(secrets.choice("0123456789") for _ in range(18))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="An in-memory WeChat Pay API v3 sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("public_key", "certificate"), default="public_key")
    args = parser.parse_args(argv)
    sandbox = WechatPaySandbox(mode=args.mode)
    # One line of JSON first, so that a script (or a test) can read it before the server starts answering.
    json.dump({**sandbox.describe(), "api_base": f"http://{args.host}:{args.port}"}, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    import uvicorn

    uvicorn.run(sandbox.app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
