"""The Alipay channel adapter (payments/channels/base.py) over the wire format in alipay.py.

Callbacks need only `AlipayConfig` (app id and Alipay's public key). The API side (create, query, close, refund,
statements) also needs the application's private key and an HTTP client: without them those calls raise
ChannelUnavailable naming what is missing, so a callback-only deployment still answers callbacks.

Reference: Alipay open platform, alipay.trade.precreate / query / close / refund, alipay.trade.fastpay.refund.query,
alipay.data.dataservice.bill.downloadurl.query; "公共请求参数", "公共响应参数" and "同步验签" (every response is the
signed JSON text of `<method>_response`; code 10000 is success, 20000 a system error, 40004 a business refusal with
sub_code and sub_msg).
"""

from __future__ import annotations

import io
import json
import logging
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from payments.channels import alipay as ali
from payments.channels import alipay_bill
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
from payments.channels.common import Acknowledgement, ChannelRefusal
from payments.money import MoneyError, format_yuan, parse_yuan

NAME = "alipay"
DEFAULT_GATEWAY = "https://openapi.alipay.com/gateway.do"
log = logging.getLogger("sscard.payments.alipay")

_KIND = {
    ali.TradeStatus.TRADE_SUCCESS: Kind.PAID,
    ali.TradeStatus.TRADE_FINISHED: Kind.PAID,  # after TRADE_SUCCESS it is a duplicate; alone it is the payment
    ali.TradeStatus.TRADE_CLOSED: Kind.CLOSED,
}
_STATUS = {
    "WAIT_BUYER_PAY": TradeStatus.UNPAID,
    "TRADE_SUCCESS": TradeStatus.PAID,
    "TRADE_FINISHED": TradeStatus.PAID,
    "TRADE_CLOSED": TradeStatus.CLOSED,
}
SUCCESS, SYSTEM_ERROR, BUSINESS_FAILED = "10000", "20000", "40004"
TRADE_NOT_EXIST, TRADE_STATUS_ERROR = "ACQ.TRADE_NOT_EXIST", "ACQ.TRADE_STATUS_ERROR"
_RETRYABLE = {"ACQ.SYSTEM_ERROR", "isp.unknow-error", "aop.ACQ.SYSTEM_ERROR"}
_MAX_BILL = 512 * 1024 * 1024  # a zipped day of a large merchant stays well below this


@dataclass(frozen=True)
class AlipayConfig:
    app_id: str
    public_key: rsa.RSAPublicKey = field(repr=False)
    max_age_seconds: int = 900
    future_skew_seconds: int = 60


class AlipayAdapter:
    name = NAME

    def __init__(
        self,
        config: AlipayConfig,
        *,
        app_private_key: rsa.RSAPrivateKey | None = None,
        gateway_url: str = DEFAULT_GATEWAY,
        notify_url: str | None = None,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._private_key = app_private_key  # signs every request: never in a repr, a log or an error
        self.gateway_url = gateway_url
        self.notify_url = notify_url
        self._http = http
        self._clock = clock

    def __repr__(self) -> str:
        return f"AlipayAdapter(app_id={self.config.app_id!r}, gateway_url={self.gateway_url!r})"

    # --- callbacks ----------------------------------------------------------------------------------------------

    def read_callback(self, headers: Mapping[str, str], body: bytes, *, now: float) -> VerifiedCallback:
        config = self.config
        params = ali.verify_notify(ali.parse_form(body), config.public_key)
        notice = ali.parse_trade_notify(
            params,
            app_id=config.app_id,
            now=now,
            max_age_seconds=config.max_age_seconds,
            future_skew_seconds=config.future_skew_seconds,
        )
        payload = {k: v for k, v in params.items() if k not in ("sign", "sign_type")}
        # Alipay has no nonce: a replay inside the window carries a notify_id already in the inbox, changing nothing.
        if notice.is_refund:
            assert notice.refund_fee_fen is not None and notice.out_biz_no is not None
            # Alipay only notifies a refund it has made (refunds are synchronous there). refund_fee is the trade's
            # total refunded so far: for a second partial refund it is more than this refund, which the applier
            # must compare against the refund's own amount (payload keeps the raw fields).
            return VerifiedCallback(
                RefundEvent(
                    channel=NAME,
                    event_id=notice.notify_id,
                    refund_no=notice.out_biz_no,
                    order_no=notice.out_trade_no,
                    channel_refund_no=notice.trade_no,
                    outcome=RefundOutcome.SUCCEEDED,
                    amount_fen=notice.refund_fee_fen,
                    payload=payload,
                    amount_is_total=True,
                )
            )
        event = ChannelEvent(
            channel=NAME,
            event_id=notice.notify_id,
            order_no=notice.out_trade_no,
            channel_trade_no=notice.trade_no,
            channel_state=notice.trade_status,
            kind=_KIND.get(notice.trade_status, Kind.OTHER),
            amount_fen=notice.total_amount_fen,
            currency="CNY",  # Alipay's trade notification has no currency field: total_amount is in yuan
            payload=payload,
        )
        return VerifiedCallback(event)

    def acknowledge(self, refusal: ChannelRefusal | None = None, *, failed: bool = False) -> Acknowledgement:
        if refusal is None and not failed:
            return ali.acknowledge_success()
        return ali.acknowledge_refusal()

    # --- the gateway --------------------------------------------------------------------------------------------

    def _call(self, method: str, biz: Mapping[str, Any], *, notify_url: str | None = None) -> dict[str, Any]:
        """One signed gateway call; the verified result when its code is 10000.

        ChannelUnavailable when the outcome is unknown (transport, HTTP status, unverifiable answer, system error);
        ChannelDeclined with Alipay's sub_code for a signed business refusal.
        """
        if self._private_key is None or self._http is None:
            missing = "app_private_key" if self._private_key is None else "http client"
            raise ChannelUnavailable(f"alipay {method}: the adapter has no {missing} (callback-only configuration)")
        moment = datetime.fromtimestamp(self._clock(), ali.CHINA_TIME)
        common = {
            "app_id": self.config.app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": ali.format_time(moment),
            "version": "1.0",
            "notify_url": notify_url or "",
        }
        biz_content = json.dumps(biz, ensure_ascii=False, separators=(",", ":"))
        signed = ali.sign_request({**common, "biz_content": biz_content}, self._private_key)
        # As Alipay's SDKs do: the common parameters in the query string, biz_content in the form body.
        query = {k: v for k, v in signed.items() if k != "biz_content" and v != ""}
        try:
            response = self._http.post(
                self.gateway_url,
                params=query,
                data={"biz_content": biz_content},
                headers={"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"},
            )
        except httpx.HTTPError as exc:
            raise ChannelUnavailable(f"alipay {method}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise ChannelUnavailable(f"alipay {method}: HTTP {response.status_code}")
        try:
            result = ali.verify_response(response.content, method, self.config.public_key)
        except ali.ResponseError as exc:
            log.warning("alipay %s: response refused: %s", method, exc)
            raise ChannelUnavailable(f"alipay {method}: unverifiable response ({exc})") from None
        code, sub_code = str(result.get("code", "")), str(result.get("sub_code", ""))
        if code == SUCCESS:
            return result
        sub_msg = str(result.get("sub_msg") or result.get("msg") or "")
        if code == SYSTEM_ERROR or sub_code in _RETRYABLE:
            raise ChannelUnavailable(f"alipay {method}: {code} {sub_code}")
        raise ChannelDeclined(sub_code or code, sub_msg)

    def _checked(self, result: Mapping[str, Any], name: str, expected: str) -> None:
        # A signed answer about another order than we asked for is a gateway fault, not a fact about ours.
        if result.get(name) not in (None, expected):
            raise ChannelUnavailable(f"alipay answered for another {name}")

    def create_payment(self, order: PaymentOrderRef) -> PaymentStart:
        biz = {
            "out_trade_no": order.order_no,
            "total_amount": format_yuan(order.amount_fen),
            "subject": order.description[:256],
            "time_expire": ali.format_time(order.expires_at),
        }
        result = self._call("alipay.trade.precreate", biz, notify_url=order.notify_url or self.notify_url)
        self._checked(result, "out_trade_no", order.order_no)
        qr_code = result.get("qr_code")
        if not isinstance(qr_code, str) or not qr_code:
            raise ChannelUnavailable("alipay precreate answered without qr_code")
        return PaymentStart(order_no=order.order_no, method="qr_code", data={"code_url": qr_code})

    def query_payment(self, order_no: str) -> ChannelTrade:
        try:
            result = self._call("alipay.trade.query", {"out_trade_no": order_no})
        except ChannelDeclined as declined:
            if declined.code == TRADE_NOT_EXIST:
                return ChannelTrade(order_no=order_no, status=TradeStatus.NOT_FOUND, raw_state=TRADE_NOT_EXIST)
            raise
        self._checked(result, "out_trade_no", order_no)
        raw = str(result.get("trade_status", ""))
        status = _STATUS.get(raw)
        if status is None:
            raise ChannelUnavailable("alipay query answered an unknown trade_status")
        paid_at = _time(result.get("send_pay_date"))
        # A fully refunded trade is TRADE_CLOSED too; its payment date tells it from one closed unpaid.
        if status is TradeStatus.CLOSED and paid_at is not None:
            status = TradeStatus.PAID
        return ChannelTrade(
            order_no=order_no,
            status=status,
            amount_fen=_fen(result.get("total_amount"), "total_amount"),
            channel_trade_no=str(result.get("trade_no") or "") or None,
            paid_at=paid_at if status is TradeStatus.PAID else None,
            raw_state=raw,
        )

    def close_payment(self, order_no: str) -> CloseResult:
        try:
            result = self._call("alipay.trade.close", {"out_trade_no": order_no})
        except ChannelDeclined as declined:
            if declined.code == TRADE_NOT_EXIST:
                return CloseResult.NOT_FOUND
            if declined.code != TRADE_STATUS_ERROR:
                raise
            # Only a trade waiting for the buyer can be closed; the query says whether it was paid or already closed.
            status = self.query_payment(order_no).status
            if status is TradeStatus.PAID:
                return CloseResult.ALREADY_PAID
            if status is TradeStatus.CLOSED:
                return CloseResult.CLOSED
            raise
        self._checked(result, "out_trade_no", order_no)
        return CloseResult.CLOSED

    def refund(self, request: RefundRequest) -> RefundStatus:
        biz = {
            "out_trade_no": request.order_no,
            "refund_amount": format_yuan(request.amount_fen),
            "out_request_no": request.refund_no,  # Alipay's idempotency key for the refund: a retry refunds once
            "refund_reason": request.reason[:256],
        }
        result = self._call("alipay.trade.refund", biz)
        self._checked(result, "out_trade_no", request.order_no)
        if result.get("fund_change") == "Y":
            return RefundStatus(
                refund_no=request.refund_no,
                outcome=RefundOutcome.SUCCEEDED,
                amount_fen=request.amount_fen,
                channel_refund_no=str(result.get("trade_no") or "") or None,
                raw_state="fund_change=Y",
            )
        # "N": no money moved by this call, which is also how Alipay answers a repeat of a refund it already made.
        return self.query_refund(request.order_no, request.refund_no)

    def query_refund(self, order_no: str, refund_no: str) -> RefundStatus:
        biz = {"out_trade_no": order_no, "out_request_no": refund_no, "query_options": ["gmt_refund_pay"]}
        result = self._call("alipay.trade.fastpay.refund.query", biz)
        self._checked(result, "out_trade_no", order_no)
        self._checked(result, "out_request_no", refund_no)
        refund_status = str(result.get("refund_status") or "")
        amount = result.get("refund_amount")
        if amount in (None, ""):
            # Alipay: a refund its query does not know was not made. Not FAILED, since a refund call still in
            # flight could yet make it: repeat refund() with the same refund_no (Alipay makes it at most once).
            return RefundStatus(refund_no, RefundOutcome.PROCESSING, 0, raw_state="NOT_FOUND")
        outcome = RefundOutcome.SUCCEEDED if refund_status in ("", "REFUND_SUCCESS") else RefundOutcome.PROCESSING
        return RefundStatus(
            refund_no=refund_no,
            outcome=outcome,
            amount_fen=_fen(amount, "refund_amount") or 0,
            channel_refund_no=str(result.get("trade_no") or "") or None,
            raw_state=refund_status or "REFUND_SUCCESS",
        )

    # --- statements ---------------------------------------------------------------------------------------------

    def fetch_statement(self, day: date) -> bytes:
        """The day's trade bill (业务明细 CSV, as Alipay encodes it), unzipped from Alipay's download."""
        result = self._call(
            "alipay.data.dataservice.bill.downloadurl.query", {"bill_type": "trade", "bill_date": day.isoformat()}
        )
        url = result.get("bill_download_url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ChannelUnavailable("alipay bill answer without bill_download_url")
        assert self._http is not None
        try:
            response = self._http.get(url)
        except httpx.HTTPError as exc:
            raise ChannelUnavailable(f"alipay bill download: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise ChannelUnavailable(f"alipay bill download: HTTP {response.status_code}")
        data = response.content
        if len(data) > _MAX_BILL:
            raise ChannelUnavailable("alipay bill download too large")
        return _detail_csv(data) if zipfile.is_zipfile(io.BytesIO(data)) else data

    def parse_statement(self, data: Iterable[bytes]) -> Iterator[StatementLine]:
        return alipay_bill.parse(data)


def _detail_csv(data: bytes) -> bytes:
    """The detail file of Alipay's bill zip (its other file is the summary, 业务明细(汇总))."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            details = [info for info in archive.infolist() if _is_detail(_zip_name(info))]
            if len(details) != 1:
                raise ChannelUnavailable("alipay bill zip without exactly one 业务明细 file")
            if details[0].file_size > _MAX_BILL:
                raise ChannelUnavailable("alipay bill too large")
            return archive.read(details[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise ChannelUnavailable(f"alipay bill zip unreadable: {type(exc).__name__}") from None


def _zip_name(info: zipfile.ZipInfo) -> str:
    if info.flag_bits & 0x800:
        return info.filename
    try:  # Alipay's zips name their files in GBK without the UTF-8 flag, which zipfile reads as cp437
        return info.filename.encode("cp437").decode("gbk")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename


def _is_detail(name: str) -> bool:
    return name.endswith("业务明细.csv") and "汇总" not in name


def _fen(value: object, name: str) -> int | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):  # Alipay writes amounts as strings; a JSON number may already have lost fen
        raise ChannelUnavailable(f"alipay answered {name} as a number")
    try:
        return parse_yuan(value)
    except MoneyError:
        raise ChannelUnavailable(f"alipay answered a malformed {name}") from None


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=ali.CHINA_TIME)
    except ValueError:
        raise ChannelUnavailable("alipay answered a malformed time") from None
