"""The WeChat Pay API v3 channel adapter (payments/channels/base.py) over the wire format in wechatpay.py."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from payments.channels import wechatpay as wx
from payments.channels.base import ChannelEvent, Kind, VerifiedCallback
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


def _strict_json(plaintext: bytes) -> dict[str, Any]:
    def refuse(_: str) -> None:
        raise ChannelRefusal(RefusalReason.MALFORMED, "transaction holds a non-finite number")

    # parse_transaction has already accepted it as a JSON object; NaN/Infinity would not store as JSON.
    return json.loads(plaintext, parse_constant=refuse)  # type: ignore[no-any-return]


class WechatPayAdapter:
    name = NAME

    def __init__(self, config: WechatPayConfig) -> None:
        self.config = config

    def read_callback(self, headers: Mapping[str, str], body: bytes, *, now: float) -> VerifiedCallback:
        config = self.config
        verified = wx.verify_callback(
            headers,
            body,
            config.platform_keys,
            max_age_seconds=config.max_age_seconds,
            future_skew_seconds=config.future_skew_seconds,
            now=now,
        )
        notification = wx.parse_notification(verified.body)
        if notification.resource_type != "encrypt-resource" or notification.resource.original_type != "transaction":
            raise ChannelRefusal(RefusalReason.UNSUPPORTED, "not a payment notification")
        plaintext = wx.decrypt_resource(notification.resource, config.apiv3_key)
        tx = wx.parse_transaction(plaintext, expected_mchid=config.mchid, expected_appid=config.appid)
        event = ChannelEvent(
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
            payload={
                "id": notification.id,
                "event_type": notification.event_type,
                "create_time": notification.create_time.isoformat(),
                "resource": _strict_json(plaintext),
            },
        )
        # Single use per signing key: the caller spends it once the whole callback is known good.
        return VerifiedCallback(event, nonce=f"{verified.serial}:{verified.nonce}", nonce_ttl=config.nonce_ttl)

    def acknowledge(self, refusal: ChannelRefusal | None = None, *, failed: bool = False) -> Acknowledgement:
        if refusal is not None:
            return wx.acknowledge_refusal(refusal)
        if failed:
            return wx.acknowledge_refusal()
        return wx.acknowledge_success()
