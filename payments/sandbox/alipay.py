"""An in-memory Alipay gateway over HTTP, faults on request: what the Alipay adapter is tested against.

It speaks Alipay's wire format (payments/channels/alipay.py): POST or GET /gateway.do with the common parameters
and biz_content, the request's RSA2 sign checked against the application's public key (40002
isv.invalid-signature otherwise), every answer the signed `<method>_response` JSON; async notifications signed with
its own Alipay key and retried until the answer is exactly `success`; the trade bill as a zip behind a download URL.

Drivers stand in for the payer and for Alipay's own jobs: `scan`, `pay`, `close`, `finish`, `refund_notice`,
`bill`. Faults: `fail_next(n, GatewayFault...)` for the gateway, a `NotifyFault` on `pay`, a `BillFault` on `bill`.
Notifications go through an injectable sender `(url, headers, body) -> (status, body)`; tests post them straight
into the service's TestClient. Time is the injected clock, never slept on.

Run alone: `python -m payments.sandbox.alipay --port 18110` prints its configuration (keys included: sandbox keys,
generated per run) as one JSON line and serves until stopped.
"""

from __future__ import annotations

import argparse
import base64
import collections
import io
import json
import secrets
import sys
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from payments.channels import alipay as ali
from payments.channels.alipay_bill import BillRow, render
from payments.channels.base import LineKind
from payments.money import MoneyError, format_yuan, parse_yuan

Sender = Callable[[str, Mapping[str, str], bytes], tuple[int, bytes]]
SELLER_ID = "2088102119685838"
BUYER_ID = "2088102169481075"
_MAX_ATTEMPTS = 8  # Alipay retries 8 times over about 25 hours (4m, 10m, 10m, 1h, 2h, 6h, 15h)


class GatewayFault(StrEnum):
    HTTP_500 = "http_500"  # the gateway answers 500, nothing done
    TIMEOUT = "timeout"  # no answer, nothing done (the client sees a read timeout)
    LOST_RESPONSE = "lost_response"  # done, but the answer never arrives
    SYSTEM_ERROR = "system_error"  # signed 20000 isp.unknow-error, nothing done
    BUSY = "busy"  # signed 40004 ACQ.SYSTEM_ERROR, nothing done
    BAD_SIGNATURE = "bad_signature"  # done, answered under another key


class NotifyFault(StrEnum):
    NONE = "none"
    NEVER = "never"  # paid, but no notification (the query path must find it)
    TWICE = "twice"  # delivered again after it was acknowledged
    WRONG_SIGNATURE = "wrong_signature"
    STALE = "stale"  # notify_time an hour old
    OTHER_AMOUNT = "other_amount"  # total_amount other than the trade's
    CLOSED_AFTER = "closed_after"  # a TRADE_CLOSED notification after TRADE_SUCCESS


class BillFault(StrEnum):
    EXTRA_LINE = "extra_line"  # a payment we never had
    MISSING_LINE = "missing_line"  # the day's first movement left out
    WRONG_AMOUNT = "wrong_amount"  # the day's first payment one fen more


@dataclass
class Delivery:
    """One notification and every attempt to deliver it: (HTTP status, body); status 0 when the send failed."""

    notify_id: str
    params: dict[str, str]
    attempts: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def acknowledged(self) -> bool:
        return bool(self.attempts) and self.attempts[-1] == (200, b"success")


@dataclass
class _Refund:
    out_request_no: str
    amount_fen: int
    at: float
    reason: str


@dataclass
class _Trade:
    out_trade_no: str
    trade_no: str
    total_fen: int
    subject: str
    notify_url: str
    created_at: float
    expires_at: float | None
    status: str = "WAIT_BUYER_PAY"
    scanned: bool = False  # Alipay knows a precreated trade (query, close) only once the payer has scanned it
    paid_at: float | None = None
    closed_at: float | None = None
    refunds: dict[str, _Refund] = field(default_factory=dict)

    @property
    def refunded_fen(self) -> int:
        return sum(r.amount_fen for r in self.refunds.values())


class _Answer(Exception):
    """A business answer (code, sub_code, sub_msg) ending a gateway call."""

    def __init__(self, code: str, sub_code: str, sub_msg: str) -> None:
        super().__init__(sub_code)
        self.result = {"code": code, "msg": _MSG.get(code, "Business Failed"), "sub_code": sub_code, "sub_msg": sub_msg}


_MSG = {
    "10000": "Success",
    "20000": "Service Currently Unavailable",
    "40001": "Missing Required Arguments",
    "40002": "Invalid Arguments",
}


def _amount(biz: Mapping[str, Any], name: str) -> int:
    """A positive yuan amount of the request in fen, or Alipay's INVALID_PARAMETER naming the field."""
    try:
        fen = parse_yuan(str(biz.get(name, "")))
    except MoneyError:
        fen = 0
    if fen <= 0:
        raise _Answer("40004", "ACQ.INVALID_PARAMETER", f"{name} 无效")
    return fen


def _china(moment: float) -> str:
    return ali.format_time(datetime.fromtimestamp(moment, ali.CHINA_TIME))


def http_sender(url: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
    response = httpx.post(url, content=body, headers=dict(headers), timeout=10)
    return response.status_code, response.content


class AlipaySandbox:
    def __init__(
        self,
        *,
        app_id: str,
        app_public_key: rsa.RSAPublicKey,
        alipay_private_key: rsa.RSAPrivateKey | None = None,
        sender: Sender = http_sender,
        clock: Callable[[], float] = time.time,
        base_url: str = "http://testserver",
        notify_refunds: bool = True,
        max_attempts: int = _MAX_ATTEMPTS,
    ) -> None:
        self.app_id = app_id
        self._app_public_key = app_public_key
        self._key = alipay_private_key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sender = sender
        self.clock = clock
        self.base_url = base_url.rstrip("/")
        self.notify_refunds = notify_refunds
        self.max_attempts = max_attempts
        self.trades: dict[str, _Trade] = {}
        self.deliveries: list[Delivery] = []
        self.calls: list[str] = []  # every gateway method called, faults included, in order
        self.requests: list[dict[str, str]] = []  # their parameters as received (signed, so no secrets)
        self._faults: collections.deque[GatewayFault] = collections.deque()
        self._bills: dict[str, bytes] = {}
        self._bill_fault: BillFault | None = None
        self._after_call: list[Callable[[], object]] = []  # notifications a call caused, sent once it is done
        self._lock = threading.RLock()
        self._seq = 0
        self.app = self._build_app()

    def __repr__(self) -> str:
        return f"AlipaySandbox(app_id={self.app_id!r}, trades={len(self.trades)})"

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        """Alipay's public key, what the adapter verifies answers and notifications with."""
        return self._key.public_key()

    def public_key_text(self) -> str:
        """As the Alipay console shows it: base64 of the DER SubjectPublicKeyInfo."""
        der = self.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode("ascii")

    # --- faults -------------------------------------------------------------------------------------------------

    def fail_next(self, count: int = 1, fault: GatewayFault = GatewayFault.HTTP_500) -> None:
        with self._lock:
            self._faults.extend([fault] * count)

    # --- the gateway --------------------------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Alipay sandbox", docs_url=None, redoc_url=None, openapi_url=None)

        @app.api_route("/gateway.do", methods=["GET", "POST"])
        async def gateway(request: Request) -> Response:
            body = await request.body()
            # Off the event loop: a call may send notifications, synchronously, before it answers.
            return await run_in_threadpool(self._gateway, request.url.query, body)

        @app.get("/downloadBillFile.resource")
        def download(fileId: str = "") -> Response:  # Alipay's parameter name
            data = self._bills.get(fileId)
            if data is None:
                return Response(status_code=404)
            return Response(content=data, media_type="application/octet-stream")

        # Drivers over HTTP, for a sandbox run alone (python -m payments.sandbox.alipay).
        @app.post("/_sandbox/{action}/{out_trade_no}")
        def drive(action: str, out_trade_no: str) -> Response:
            drivers: dict[str, Callable[[str], Any]] = {
                "scan": self.scan,
                "pay": self.pay,
                "close": self.close,
                "finish": self.finish,
            }
            if action not in drivers:
                return Response(status_code=404)
            try:
                drivers[action](out_trade_no)
            except (KeyError, ValueError) as exc:
                return Response(content=str(exc), status_code=409)
            return Response(status_code=204)

        return app

    def _gateway(self, query: str, body: bytes) -> Response:
        params, error = self._params(query, body)
        method = params.get("method", "")
        with self._lock:
            self.calls.append(method)
            self.requests.append(params)
            fault = self._faults.popleft() if self._faults else None
        if fault is GatewayFault.HTTP_500:
            return Response(content=b"Internal Server Error", status_code=500, media_type="text/plain")
        if fault is GatewayFault.TIMEOUT:
            raise httpx.ReadTimeout("sandbox: simulated timeout")
        if fault is GatewayFault.SYSTEM_ERROR:
            result: dict[str, Any] = _Answer("20000", "isp.unknow-error", "系统繁忙").result
        elif fault is GatewayFault.BUSY:
            result = _Answer("40004", "ACQ.SYSTEM_ERROR", "系统错误").result
        else:
            try:
                if error:
                    raise _Answer("40002", "isv.invalid-parameter", error)
                self._authenticate(params)
                handler = self._methods.get(method)
                if handler is None:
                    raise _Answer("40002", "isv.invalid-method", "不存在的方法名")
                biz = self._biz(params)
                with self._lock:
                    result = {"code": "10000", "msg": "Success", **handler(self, biz, params)}
            except _Answer as answer:
                result = answer.result
            if fault is GatewayFault.LOST_RESPONSE:
                self._run_after_call()
                raise httpx.ReadTimeout("sandbox: simulated lost response")
        key = self._forger if fault is GatewayFault.BAD_SIGNATURE else self._key
        # The gateway answers a method it does not know under error_response.
        content = ali.sign_response(method if method in self._methods else "error", result, key)
        self._run_after_call()
        return Response(content=content, media_type="application/json;charset=utf-8")

    @staticmethod
    def _params(query: str, body: bytes) -> tuple[dict[str, str], str | None]:
        try:
            pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, encoding="utf-8", errors="strict")
            pairs += urllib.parse.parse_qsl(
                body.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict"
            )
        except (UnicodeDecodeError, ValueError):
            return {}, "the request is not a UTF-8 form"
        params: dict[str, str] = {}
        for name, value in pairs:
            if name in params:
                return params, f"{name} repeated"
            params[name] = value
        return params, None

    def _authenticate(self, params: Mapping[str, str]) -> None:
        for name in ("app_id", "method", "charset", "sign_type", "sign", "timestamp", "version"):
            if not params.get(name):
                raise _Answer("40001", f"isv.missing-{name.replace('_', '-')}", f"缺少{name}参数")
        if params["app_id"] != self.app_id:
            raise _Answer("40002", "isv.invalid-app-id", "无效的AppID参数")
        if params["sign_type"] != "RSA2":
            raise _Answer("40002", "isv.invalid-signature-type", "无效的签名类型")
        if params["charset"].lower() != "utf-8" or params.get("format", "JSON").upper() != "JSON":
            raise _Answer("40002", "isv.invalid-charset", "字符集或格式错误")
        if not ali.verify_request(params, self._app_public_key):
            raise _Answer("40002", "isv.invalid-signature", "验签出错")

    @staticmethod
    def _biz(params: Mapping[str, str]) -> dict[str, Any]:
        try:
            biz = json.loads(params.get("biz_content") or "{}")
        except json.JSONDecodeError:
            raise _Answer("40002", "isv.invalid-parameter", "biz_content 不是JSON") from None
        if not isinstance(biz, dict):
            raise _Answer("40002", "isv.invalid-parameter", "biz_content 不是JSON对象")
        return biz

    # --- methods (called under the lock) ------------------------------------------------------------------------

    def _trade(self, biz: Mapping[str, Any], *, visible: bool = True) -> _Trade:
        trade = self.trades.get(str(biz.get("out_trade_no", "")))
        if trade is None or (visible and not trade.scanned):
            raise _Answer("40004", "ACQ.TRADE_NOT_EXIST", "交易不存在")
        return trade

    def _precreate(self, biz: Mapping[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
        out_trade_no, subject = str(biz.get("out_trade_no", "")), str(biz.get("subject", ""))
        if not out_trade_no or len(out_trade_no) > 64 or not subject:
            raise _Answer("40004", "ACQ.INVALID_PARAMETER", "参数无效")
        total = _amount(biz, "total_amount")
        expires = None
        if biz.get("time_expire"):
            try:
                expires = datetime.strptime(str(biz["time_expire"]), "%Y-%m-%d %H:%M:%S").replace(tzinfo=ali.CHINA_TIME)
            except ValueError:
                raise _Answer("40004", "ACQ.INVALID_PARAMETER", "time_expire 无效") from None
        trade = self.trades.get(out_trade_no)
        if trade is not None:
            if trade.status != "WAIT_BUYER_PAY":
                raise _Answer("40004", "ACQ.TRADE_HAS_SUCCESS" if trade.paid_at else "ACQ.TRADE_HAS_CLOSE", "交易状态")
            if trade.total_fen != total:
                raise _Answer("40004", "ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
        else:
            self._seq += 1
            trade = _Trade(
                out_trade_no=out_trade_no,
                trade_no=f"{_china(self.clock())[:10].replace('-', '')}22001{self._seq:015d}",
                total_fen=total,
                subject=subject,
                notify_url=params.get("notify_url", ""),
                created_at=self.clock(),
                expires_at=expires.timestamp() if expires else None,
            )
            self.trades[out_trade_no] = trade
        return {"out_trade_no": out_trade_no, "qr_code": f"https://qr.alipay.com/bax0{trade.trade_no[-8:]}"}

    def _query(self, biz: Mapping[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
        trade = self._trade(biz)
        result: dict[str, Any] = {
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_logon_id": "csq***@sandbox.com",
            "trade_status": trade.status,
            "total_amount": format_yuan(trade.total_fen),
        }
        if trade.paid_at is not None:
            paid = format_yuan(trade.total_fen)
            result |= {"buyer_pay_amount": paid, "receipt_amount": paid, "send_pay_date": _china(trade.paid_at)}
        return result

    def _close(self, biz: Mapping[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
        trade = self._trade(biz)
        if trade.status != "WAIT_BUYER_PAY":
            raise _Answer("40004", "ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        trade.status, trade.closed_at = "TRADE_CLOSED", self.clock()
        return {"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no}

    def _refund(self, biz: Mapping[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
        trade = self._trade(biz)
        request_no = str(biz.get("out_request_no") or trade.out_trade_no)
        amount = _amount(biz, "refund_amount")
        done = trade.refunds.get(request_no)
        fund_change = "N"
        if done is not None:
            if done.amount_fen != amount:
                raise _Answer("40004", "ACQ.DISCORDANT_REPEAT_REQUEST", "请求信息不一致")
        else:
            done = self._make_refund(trade, request_no, amount, str(biz.get("refund_reason", "")))
            fund_change = "Y"
            if self.notify_refunds:
                self._after_call.append(lambda: self.refund_notice(trade.out_trade_no, request_no))
        return {
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_logon_id": "csq***@sandbox.com",
            "fund_change": fund_change,
            "refund_fee": format_yuan(trade.refunded_fen),
            "gmt_refund_pay": _china(done.at),
        }

    def _make_refund(self, trade: _Trade, request_no: str, amount: int, reason: str) -> _Refund:
        if trade.status == "TRADE_FINISHED":
            raise _Answer("40004", "ACQ.TRADE_HAS_FINISHED", "交易已完结")
        if trade.paid_at is None or trade.status != "TRADE_SUCCESS":
            raise _Answer("40004", "ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        if trade.refunded_fen + amount > trade.total_fen:
            raise _Answer("40004", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
        done = trade.refunds[request_no] = _Refund(request_no, amount, self.clock(), reason)
        if trade.refunded_fen == trade.total_fen:
            trade.status, trade.closed_at = "TRADE_CLOSED", self.clock()
        return done

    def _refund_query(self, biz: Mapping[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
        trade = self._trade(biz)
        request_no = str(biz.get("out_request_no", ""))
        result: dict[str, Any] = {"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no}
        done = trade.refunds.get(request_no)
        if done is not None:  # Alipay answers 10000 without refund fields when it made no such refund
            result |= {
                "out_request_no": request_no,
                "total_amount": format_yuan(trade.total_fen),
                "refund_amount": format_yuan(done.amount_fen),
                "refund_status": "REFUND_SUCCESS",
                "gmt_refund_pay": _china(done.at),
            }
        return result

    def _bill_url(self, biz: Mapping[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
        if biz.get("bill_type") != "trade":
            raise _Answer("40004", "isp.bill_type_invalid", "账单类型无效")
        try:
            day = date.fromisoformat(str(biz.get("bill_date", "")))
        except ValueError:
            raise _Answer("40004", "isv.invalid-arguments", "bill_date 无效") from None
        today = datetime.fromtimestamp(self.clock(), ali.CHINA_TIME).date()
        if day >= today:
            raise _Answer("40004", "isp.bill_not_exist", "账单不存在")
        file_id = secrets.token_hex(12)
        self._bills[file_id] = self._zip(day, self.bill(day, fault=self._bill_fault))
        stamp = day.strftime("%Y%m%d")
        query = f"bizType=trade&fileType=csv.zip&bizDates={stamp}&fileId={file_id}"
        return {"bill_download_url": f"{self.base_url}/downloadBillFile.resource?{query}"}

    _methods: ClassVar[dict[str, Callable[[AlipaySandbox, Mapping[str, Any], Mapping[str, str]], dict[str, Any]]]] = {
        "alipay.trade.precreate": _precreate,
        "alipay.trade.query": _query,
        "alipay.trade.close": _close,
        "alipay.trade.refund": _refund,
        "alipay.trade.fastpay.refund.query": _refund_query,
        "alipay.data.dataservice.bill.downloadurl.query": _bill_url,
    }

    def _run_after_call(self) -> None:
        with self._lock:
            pending, self._after_call = self._after_call, []
        for action in pending:
            action()

    # --- drivers ------------------------------------------------------------------------------------------------

    def _known(self, out_trade_no: str) -> _Trade:
        trade = self.trades.get(out_trade_no)
        if trade is None:
            raise KeyError(f"no trade {out_trade_no}")
        return trade

    def scan(self, out_trade_no: str) -> None:
        """The payer scanned the code: Alipay now knows the trade (query, close) while it waits for the payment."""
        with self._lock:
            trade = self._known(out_trade_no)
            if trade.expires_at is not None and self.clock() > trade.expires_at:
                raise ValueError("the code has expired")
            trade.scanned = True

    def pay(
        self, out_trade_no: str, fault: NotifyFault = NotifyFault.NONE, *, amount_fen: int | None = None
    ) -> list[Delivery]:
        """The payer pays: TRADE_SUCCESS, then the notification (or the fault asked for)."""
        self.scan(out_trade_no)
        with self._lock:
            trade = self._known(out_trade_no)
            if trade.status != "WAIT_BUYER_PAY":
                raise ValueError(f"trade {out_trade_no} is {trade.status}")
            trade.status, trade.paid_at = "TRADE_SUCCESS", self.clock()
        if fault is NotifyFault.NEVER:
            return []
        params = self._notify_params(trade, "TRADE_SUCCESS")
        key = self._key
        if fault is NotifyFault.OTHER_AMOUNT:
            other = format_yuan(amount_fen if amount_fen is not None else trade.total_fen + 1)
            params |= {"total_amount": other, "receipt_amount": other, "buyer_pay_amount": other}
        elif fault is NotifyFault.WRONG_SIGNATURE:
            key = self._forger
        stale = 3600 if fault is NotifyFault.STALE else 0
        deliveries = [self._deliver(trade.notify_url, params, key=key, age=stale)]
        if fault is NotifyFault.TWICE:
            deliveries.append(self._deliver(trade.notify_url, params))
        elif fault is NotifyFault.CLOSED_AFTER:
            deliveries.append(self._deliver(trade.notify_url, self._notify_params(trade, "TRADE_CLOSED")))
        return deliveries

    def close(self, out_trade_no: str) -> list[Delivery]:
        """Alipay closes an unpaid trade (its time ran out) and notifies TRADE_CLOSED."""
        with self._lock:
            trade = self._known(out_trade_no)
            if trade.status != "WAIT_BUYER_PAY":
                raise ValueError(f"trade {out_trade_no} is {trade.status}")
            trade.status, trade.closed_at = "TRADE_CLOSED", self.clock()
        return [self._deliver(trade.notify_url, self._notify_params(trade, "TRADE_CLOSED"))]

    def finish(self, out_trade_no: str) -> list[Delivery]:
        """The refund period is over: TRADE_FINISHED, notified again (a duplicate of the payment for the inbox)."""
        with self._lock:
            trade = self._known(out_trade_no)
            if trade.status != "TRADE_SUCCESS":
                raise ValueError(f"trade {out_trade_no} is {trade.status}")
            trade.status = "TRADE_FINISHED"
        return [self._deliver(trade.notify_url, self._notify_params(trade, "TRADE_FINISHED"))]

    def refund(self, out_trade_no: str, out_request_no: str, amount_fen: int) -> Delivery:
        """A refund made at Alipay outside our API (the merchant console), and its notice."""
        with self._lock:
            trade = self._known(out_trade_no)
            if out_request_no in trade.refunds:
                raise ValueError(f"refund {out_request_no} exists")
            try:
                self._make_refund(trade, out_request_no, amount_fen, "商家后台退款")
            except _Answer as answer:
                raise ValueError(answer.result["sub_code"]) from None
        return self.refund_notice(out_trade_no, out_request_no)

    def refund_notice(self, out_trade_no: str, out_request_no: str) -> Delivery:
        """The notification Alipay sends after a refund: the trade's state with refund_fee (the total refunded so
        far), gmt_refund and out_biz_no (the refund's out_request_no)."""
        with self._lock:
            trade = self._known(out_trade_no)
            refund = trade.refunds[out_request_no]
            params = self._notify_params(trade, trade.status)
            refunded = sum(r.amount_fen for r in trade.refunds.values() if r.at <= refund.at)
            moment = datetime.fromtimestamp(refund.at, ali.CHINA_TIME)
            params |= {
                "refund_fee": format_yuan(refunded),
                "out_biz_no": out_request_no,
                "gmt_refund": f"{ali.format_time(moment)}.{moment.microsecond // 1000:03d}",
            }
        return self._deliver(trade.notify_url, params)

    def _notify_params(self, trade: _Trade, status: str) -> dict[str, str]:
        total = format_yuan(trade.total_fen)
        params = {
            "notify_type": "trade_status_sync",
            "notify_id": secrets.token_hex(17),
            "app_id": self.app_id,
            "auth_app_id": self.app_id,
            "charset": "utf-8",
            "version": "1.0",
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "trade_status": status,
            "total_amount": total,
            "subject": trade.subject,
            "buyer_id": BUYER_ID,
            "seller_id": SELLER_ID,
            "gmt_create": _china(trade.created_at),
        }
        if trade.paid_at is not None:
            params |= {
                "receipt_amount": total,
                "buyer_pay_amount": total,
                "invoice_amount": total,
                "gmt_payment": _china(trade.paid_at),
            }
        if status == "TRADE_CLOSED" and trade.closed_at is not None:
            params["gmt_close"] = _china(trade.closed_at)
        return params

    def _deliver(
        self, url: str, params: dict[str, str], *, key: rsa.RSAPrivateKey | None = None, age: int = 0
    ) -> Delivery:
        """Send until the answer is exactly `success` (HTTP 200), at most max_attempts times, as Alipay does; each
        attempt carries the same notify_id and a fresh notify_time and sign."""
        delivery = Delivery(notify_id=params["notify_id"], params=params)
        with self._lock:
            self.deliveries.append(delivery)
        if not url:
            return delivery
        for _ in range(self.max_attempts):
            signed = ali.sign_notify({**params, "notify_time": _china(self.clock() - age)}, key or self._key)
            body = ali.encode_form(signed).encode("ascii")
            headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
            try:
                answer = self.sender(url, headers, body)
            except Exception:  # whatever the receiver did, Alipay saw no answer and retries
                answer = (0, b"")
            delivery.attempts.append(answer)
            if answer == (200, b"success"):
                break
        return delivery

    # --- bills --------------------------------------------------------------------------------------------------

    def set_bill_fault(self, fault: BillFault | None) -> None:
        """The fault the next downloaded bills carry (None for a true bill)."""
        self._bill_fault = fault

    def bill(self, day: date, fault: BillFault | None = None) -> bytes:
        """The day's trade bill (业务明细 CSV, GBK): payments and refunds completed that day, China time."""
        rows: list[BillRow] = []
        with self._lock:
            for trade in self.trades.values():
                created = datetime.fromtimestamp(trade.created_at, ali.CHINA_TIME)
                if trade.paid_at is not None:
                    paid = datetime.fromtimestamp(trade.paid_at, ali.CHINA_TIME)
                    if paid.date() == day:
                        rows.append(
                            BillRow(
                                LineKind.PAYMENT,
                                trade.trade_no,
                                trade.out_trade_no,
                                trade.total_fen,
                                created,
                                paid,
                                trade.subject,
                            )
                        )
                for refund in trade.refunds.values():
                    at = datetime.fromtimestamp(refund.at, ali.CHINA_TIME)
                    if at.date() == day:
                        rows.append(
                            BillRow(
                                LineKind.REFUND,
                                trade.trade_no,
                                trade.out_trade_no,
                                refund.amount_fen,
                                created,
                                at,
                                trade.subject,
                                refund.out_request_no,
                            )
                        )
        rows.sort(key=lambda row: row.finished_at)
        if fault is BillFault.MISSING_LINE and rows:
            rows.pop(0)
        elif fault is BillFault.WRONG_AMOUNT:
            for i, row in enumerate(rows):
                if row.kind is LineKind.PAYMENT:
                    rows[i] = BillRow(
                        row.kind,
                        row.trade_no,
                        row.order_no,
                        row.amount_fen + 1,
                        row.created_at,
                        row.finished_at,
                        row.subject,
                    )
                    break
        elif fault is BillFault.EXTRA_LINE:
            moment = datetime.combine(day, datetime.min.time(), ali.CHINA_TIME) + timedelta(hours=12)
            rows.append(
                BillRow(LineKind.PAYMENT, "2026000022001999999999999999", "X-NOT-OURS", 100, moment, moment, "unknown")
            )
        return b"".join(render(rows, day=day))

    @staticmethod
    def _zip(day: date, csv: bytes) -> bytes:
        """As Alipay ships it: the detail and a (here minimal) summary file. Names are UTF-8 here (zipfile writes no
        other non-ASCII names); Alipay's GBK names are covered by the adapter's tests."""
        stamp = day.strftime("%Y%m%d")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in (
                (f"{SELLER_ID}0156_{stamp}_业务明细.csv", csv),
                (f"{SELLER_ID}0156_{stamp}_业务明细(汇总).csv", "#支付宝业务汇总查询\r\n".encode("gbk")),
            ):
                info = zipfile.ZipInfo(name, date_time=(day.year, day.month, day.day, 9, 0, 0))
                archive.writestr(info, data)
        return buffer.getvalue()


def _pem_private(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="An in-memory Alipay gateway for tests and demos.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--app-id", default="2021000000000001")
    args = parser.parse_args(argv)
    app_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    base = f"http://{args.host}:{args.port}"
    sandbox = AlipaySandbox(app_id=args.app_id, app_public_key=app_key.public_key(), base_url=base)
    config = {
        "gateway_url": f"{base}/gateway.do",
        "app_id": args.app_id,
        "alipay_public_key": sandbox.public_key_text(),
        "app_private_key": _pem_private(app_key),  # a throwaway key generated for this run, for the client under test
        "drivers": f"{base}/_sandbox/{{scan,pay,close,finish}}/{{out_trade_no}}",
    }
    print(json.dumps(config), flush=True)
    uvicorn.run(sandbox.app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1:])
