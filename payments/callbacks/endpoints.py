"""POST /v1/payments/callbacks/{wechatpay,alipay}: verify, record in the inbox, apply, acknowledge.

Each channel gets the answer it expects. WeChat Pay: 204 when recorded, `{"code":"FAIL","message":...}` with a
4xx for a callback we refuse and a 5xx for our own failure (it retries both). Alipay: HTTP 200 with the exact body
`success` when recorded, `fail` otherwise (it retries). Every verified event is acknowledged once recorded, whatever
its outcome (conflict, held, unknown order): retrying would change nothing, and the inbox row is what review reads.
The inbox row commits with the request's unit of work before the answer is sent (authsvc/deps.py), so a
success is never answered for an event the database does not hold.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from authsvc.deps import DbSession, RawBody, RuntimeDep
from payments.callbacks import inbox
from payments.callbacks.config import current
from payments.callbacks.inbox import ChannelEvent, Kind
from payments.channels import alipay as ali
from payments.channels import wechatpay as wx
from payments.channels.common import Acknowledgement, ChannelRefusal, RefusalReason

log = logging.getLogger("sscard.payments.callbacks")

router = APIRouter(prefix="/v1/payments/callbacks", tags=["payments"])

_WX_KIND = {
    wx.TradeState.SUCCESS: Kind.PAID,
    wx.TradeState.PAYERROR: Kind.FAILED,
    wx.TradeState.CLOSED: Kind.CLOSED,
    wx.TradeState.REVOKED: Kind.CLOSED,
}
_ALI_KIND = {
    ali.TradeStatus.TRADE_SUCCESS: Kind.PAID,
    ali.TradeStatus.TRADE_FINISHED: Kind.PAID,  # after TRADE_SUCCESS it is a duplicate; alone it is the payment
    ali.TradeStatus.TRADE_CLOSED: Kind.CLOSED,
}


def _answer(ack: Acknowledgement) -> Response:
    return Response(content=ack.body, status_code=ack.status, media_type=ack.content_type)


def _record(db: Session, event: ChannelEvent) -> bool:
    """Record and apply; False on our own failure (the unit of work is rolled back, the channel will retry)."""
    try:
        inbox.receive(db, event)
    except SQLAlchemyError:
        log.exception("%s event %s not recorded", event.channel, event.event_id)
        db.rollback()
        return False
    return True


def _strict_json(plaintext: bytes) -> dict[str, Any]:
    def refuse(_: str) -> None:
        raise ChannelRefusal(RefusalReason.MALFORMED, "transaction holds a non-finite number")

    # parse_transaction has already accepted it as a JSON object; NaN/Infinity would not store as JSON.
    return json.loads(plaintext, parse_constant=refuse)  # type: ignore[no-any-return]


@router.post("/wechatpay", status_code=204, response_class=Response)
def wechatpay_callback(request: Request, body: RawBody, runtime: RuntimeDep, db: DbSession) -> Response:
    config = current(request.app).wechatpay
    clock = current(request.app).clock
    if config is None:
        log.error("a WeChat Pay callback arrived but the channel is not configured")
        return _answer(wx.acknowledge_refusal(status=503))
    try:
        verified = wx.verify_callback(
            request.headers,
            body,
            config.platform_keys,
            max_age_seconds=config.max_age_seconds,
            future_skew_seconds=config.future_skew_seconds,
            now=clock(),
        )
        # Single use, once the signature is known good (a forger cannot spend nonces): a replay inside the window
        # is refused here. The key expires after the window, when the timestamp check refuses the replay instead.
        nonce_key = f"payments:wechatpay-nonce:{verified.serial}:{verified.nonce}"
        if not runtime.store.add(nonce_key, b"1", config.nonce_ttl):
            raise ChannelRefusal(RefusalReason.STALE, "Wechatpay-Nonce already used")
        notification = wx.parse_notification(verified.body)
        if notification.resource_type != "encrypt-resource" or notification.resource.original_type != "transaction":
            raise ChannelRefusal(RefusalReason.UNSUPPORTED, "not a payment notification")
        plaintext = wx.decrypt_resource(notification.resource, config.apiv3_key)
        tx = wx.parse_transaction(plaintext, expected_mchid=config.mchid, expected_appid=config.appid)
        resource = _strict_json(plaintext)
    except ChannelRefusal as refusal:
        log.warning("WeChat Pay callback refused: %s (%s)", refusal.reason, refusal.message)
        return _answer(wx.acknowledge_refusal(refusal))
    event = ChannelEvent(
        channel="wechatpay",
        # Keyed on the transaction and its state rather than the envelope's id: however WeChat Pay wraps a repeat,
        # one state of one transaction is applied once.
        event_id=f"{tx.transaction_id}:{tx.trade_state}",
        order_no=tx.out_trade_no,
        channel_trade_no=tx.transaction_id,
        channel_state=tx.trade_state,
        kind=_WX_KIND.get(tx.trade_state, Kind.OTHER),
        amount_fen=tx.total_fen,
        currency=tx.currency,
        payload={
            "id": notification.id,
            "event_type": notification.event_type,
            "create_time": notification.create_time.isoformat(),
            "resource": resource,
        },
    )
    if not _record(db, event):
        return _answer(wx.acknowledge_refusal())
    return _answer(wx.acknowledge_success())


@router.post("/alipay", response_class=Response)
def alipay_callback(request: Request, body: RawBody, db: DbSession) -> Response:
    config = current(request.app).alipay
    clock = current(request.app).clock
    if config is None:
        log.error("an Alipay notification arrived but the channel is not configured")
        return _answer(ali.acknowledge_refusal())
    try:
        params = ali.verify_notify(ali.parse_form(body), config.public_key)
        notice = ali.parse_trade_notify(
            params,
            app_id=config.app_id,
            now=clock(),
            max_age_seconds=config.max_age_seconds,
            future_skew_seconds=config.future_skew_seconds,
        )
    except ChannelRefusal as refusal:
        log.warning("Alipay notification refused: %s (%s)", refusal.reason, refusal.message)
        return _answer(ali.acknowledge_refusal())
    # Alipay has no nonce: a replay inside the window carries a notify_id already in the inbox and changes nothing.
    event = ChannelEvent(
        channel="alipay",
        event_id=notice.notify_id,
        order_no=notice.out_trade_no,
        channel_trade_no=notice.trade_no,
        channel_state=notice.trade_status,
        kind=_ALI_KIND.get(notice.trade_status, Kind.OTHER),
        amount_fen=notice.total_amount_fen,
        currency="CNY",  # Alipay's trade notification has no currency field: total_amount is in yuan
        payload={k: v for k, v in params.items() if k not in ("sign", "sign_type")},
    )
    if not _record(db, event):
        return _answer(ali.acknowledge_refusal())
    return _answer(ali.acknowledge_success())
