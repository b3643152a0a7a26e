"""The Alipay channel adapter (payments/channels/base.py) over the wire format in alipay.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa

from payments.channels import alipay as ali
from payments.channels.base import ChannelEvent, Kind, VerifiedCallback
from payments.channels.common import Acknowledgement, ChannelRefusal

NAME = "alipay"

_KIND = {
    ali.TradeStatus.TRADE_SUCCESS: Kind.PAID,
    ali.TradeStatus.TRADE_FINISHED: Kind.PAID,  # after TRADE_SUCCESS it is a duplicate; alone it is the payment
    ali.TradeStatus.TRADE_CLOSED: Kind.CLOSED,
}


@dataclass(frozen=True)
class AlipayConfig:
    app_id: str
    public_key: rsa.RSAPublicKey = field(repr=False)
    max_age_seconds: int = 900
    future_skew_seconds: int = 60


class AlipayAdapter:
    name = NAME

    def __init__(self, config: AlipayConfig) -> None:
        self.config = config

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
        # Alipay has no nonce: a replay inside the window carries a notify_id already in the inbox, changing nothing.
        event = ChannelEvent(
            channel=NAME,
            event_id=notice.notify_id,
            order_no=notice.out_trade_no,
            channel_trade_no=notice.trade_no,
            channel_state=notice.trade_status,
            kind=_KIND.get(notice.trade_status, Kind.OTHER),
            amount_fen=notice.total_amount_fen,
            currency="CNY",  # Alipay's trade notification has no currency field: total_amount is in yuan
            payload={k: v for k, v in params.items() if k not in ("sign", "sign_type")},
        )
        return VerifiedCallback(event)

    def acknowledge(self, refusal: ChannelRefusal | None = None, *, failed: bool = False) -> Acknowledgement:
        if refusal is None and not failed:
            return ali.acknowledge_success()
        return ali.acknowledge_refusal()
