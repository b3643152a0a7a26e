"""Building the payment channels at start-up from Settings and the sealed keys in keys/channel_keys/.

`install_channels(app, runtime)` (called by authsvc/app.py) puts a `Channels` registry on the application with one
adapter per channel the operator enabled (SSCARD_PAYMENT_CHANNELS). A channel whose settings or keys are missing is
left out with one log line naming what is missing; its callbacks then get 503 and the channel retries. Start-up
never fails for it.

Each adapter is wrapped in `KeyedAdapter`, which rebuilds it when the channel's keys change (the keyring re-reads
them every SSCARD_KEY_CACHE_SECONDS): a promoted key, a retired one or a platform certificate fetched by
`authsvc channel-keys refresh-wechatpay-certificates` reaches every worker without a restart. Where the channel may
be using either of two keys we cannot tell apart from the message (the WeChat Pay APIv3 key during a switch, the
Alipay public key during a rotation: neither names its key), a callback is read with each in turn, active first,
and only that key's own refusal (decryption, signature) moves on to the next.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from authsvc.config import Settings
from keys.channel_keys import ChannelKeyring, ChannelMaterial
from keys.sealing import SealError
from payments.channels import registry
from payments.channels.base import (
    ChannelAdapter,
    ChannelTrade,
    ChannelUnavailable,
    CloseResult,
    PaymentOrderRef,
    PaymentStart,
    RefundRequest,
    RefundStatus,
    StatementLine,
    VerifiedCallback,
)
from payments.channels.common import Acknowledgement, ChannelRefusal, RefusalReason

log = logging.getLogger("sscard.payments.setup")

KNOWN = ("wechatpay", "alipay", "bank", "card", "withholding")
# Whose keys each channel signs and verifies with: the card account and withholding go through the bank's gateway.
KEYS_OF = {"wechatpay": "wechatpay", "alipay": "alipay", "bank": "bank", "card": "bank", "withholding": "bank"}


class Missing(Exception):
    """What a channel lacks to be built; the message names settings and key kinds, never values."""


def notify_url(settings: Settings, channel: str) -> str:
    return f"{settings.issuer}/v1/payments/callbacks/{channel}"


def enabled(settings: Settings) -> list[str]:
    return [name.strip() for name in settings.payment_channels.split(",") if name.strip()]


def http_client(base_url: str, settings: Settings, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """One pooled client per channel. Every call has a deadline: a channel that hangs is an unknown outcome
    (ChannelUnavailable), queried later, never a worker stuck."""
    timeout = settings.payment_http_timeout
    return httpx.Client(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
        follow_redirects=False,  # a signed API answers itself; a redirect is not its answer
        trust_env=False,  # no proxy or netrc from the environment in front of a payment channel
        transport=transport,
    )


# --- one builder per channel: (context, keys) -> adapters, the active keys' first ------------------------------------


@dataclass(frozen=True)
class Context:
    """What every builder may use besides the channel's keys."""

    settings: Settings
    client: httpx.Client
    sessions: sessionmaker[Session] | None
    clock: Callable[[], float]


Builder = Callable[[Context, ChannelMaterial], Sequence[ChannelAdapter]]


def _check(ctx: Context, material: ChannelMaterial, settings: Sequence[str], keys: Mapping[str, str]) -> None:
    """Everything a channel lacks, named in one message: settings by variable, keys by kind."""
    unset = [f"SSCARD_{name.upper()}" for name in settings if not getattr(ctx.settings, name)]
    lacking = material.missing(list(keys))
    parts = []
    if unset:
        parts.append(" and ".join(unset) + (" is" if len(unset) == 1 else " are") + " not set")
    if lacking:
        parts.append("no " + " and no ".join(keys[m] for m in lacking) + f" in keys (pay:{material.channel})")
    if parts:
        raise Missing("; ".join(parts))


def build_wechatpay(ctx: Context, material: ChannelMaterial) -> Sequence[ChannelAdapter]:
    from payments.channels import wechatpay as wx
    from payments.channels.wechatpay_adapter import WechatPayAdapter, WechatPayConfig, WechatPayMerchant

    settings = ctx.settings
    keys = {
        "signer": "active merchant-key",
        "verify": "platform-certificate or platform-public-key",
        "secret": "apiv3-key",
    }
    _check(ctx, material, ["wechatpay_mchid", "wechatpay_appid"], keys)
    mchid, appid = settings.wechatpay_mchid, settings.wechatpay_appid
    assert material.signer is not None and material.signer.serial is not None
    platform = wx.PlatformKeys(dict(material.verify_keys))
    merchant = WechatPayMerchant(
        mchid=mchid,
        appid=appid,
        serial_no=material.signer.serial,
        private_key=material.signer.private_key,
        notify_url=notify_url(settings, "wechatpay"),
        api_base=settings.wechatpay_base_url.rstrip("/"),
    )
    return [
        WechatPayAdapter(
            WechatPayConfig(mchid=mchid, appid=appid, platform_keys=platform, apiv3_key=key),
            merchant=merchant,
            http=ctx.client,
            clock=ctx.clock,
        )
        for key in material.secrets
    ]


def build_alipay(ctx: Context, material: ChannelMaterial) -> Sequence[ChannelAdapter]:
    from payments.channels.alipay_adapter import AlipayAdapter, AlipayConfig

    settings = ctx.settings
    _check(ctx, material, ["alipay_app_id"], {"signer": "active app-key", "verify": "alipay-public-key"})
    app_id = settings.alipay_app_id
    assert material.signer is not None
    return [
        AlipayAdapter(
            AlipayConfig(app_id=app_id, public_key=key),
            app_private_key=material.signer.private_key,
            gateway_url=settings.alipay_gateway_url,
            notify_url=notify_url(settings, "alipay"),
            http=ctx.client,
            clock=ctx.clock,
        )
        for key in material.verify_keys.values()
    ]


def _bank_config(ctx: Context, material: ChannelMaterial) -> Any:
    from payments.channels import bank
    from payments.channels.bank_adapter import BankConfig

    keys = {"signer": "active signing-key", "verify": "bank-public-key"}
    _check(ctx, material, ["bank_merchant_id", "bank_base_url"], keys)
    assert material.signer is not None and material.signer.serial is not None
    return BankConfig(
        merchant_id=ctx.settings.bank_merchant_id,
        signing_key=bank.SigningKey(material.signer.serial, material.signer.private_key),
        bank_keys=bank.KeyRing(dict(material.verify_keys)),
        clock=ctx.clock,
    )


def build_bank(ctx: Context, material: ChannelMaterial) -> Sequence[ChannelAdapter]:
    from payments.channels.bank_adapter import BankAdapter

    return [BankAdapter(_bank_config(ctx, material), ctx.client)]


def build_card(ctx: Context, material: ChannelMaterial) -> Sequence[ChannelAdapter]:
    from payments.channels.card_adapter import CardAccountAdapter

    return [CardAccountAdapter(_bank_config(ctx, material), ctx.client)]


def build_withholding(ctx: Context, material: ChannelMaterial) -> Sequence[ChannelAdapter]:
    from payments.withholding.adapter import WithholdingAdapter

    return [WithholdingAdapter(_bank_config(ctx, material), ctx.client, ctx.sessions)]


BUILDERS: dict[str, Builder] = {
    "wechatpay": build_wechatpay,
    "alipay": build_alipay,
    "bank": build_bank,
    "card": build_card,
    "withholding": build_withholding,
}


def base_url(settings: Settings, channel: str) -> str:
    return {
        "wechatpay": settings.wechatpay_base_url,
        "alipay": settings.alipay_gateway_url,
        "bank": settings.bank_base_url,
        "card": settings.bank_base_url,
        "withholding": settings.bank_base_url,
    }[channel]


# --- the adapter that follows its keys ---------------------------------------------------------------------------


# Which refusal means "not this key, perhaps the next": anything else is the message's fault and final.
_KEY_REFUSALS = {"wechatpay": RefusalReason.DECRYPTION, "alipay": RefusalReason.SIGNATURE}


class KeyedAdapter:
    """A channel's adapter as its current keys build it (ChannelAdapter)."""

    def __init__(self, name: str, context: Context, keyring: ChannelKeyring, builder: Builder) -> None:
        self.name = name
        self._context = context
        self._keyring = keyring
        self._builder = builder
        self._built: tuple[ChannelMaterial, Sequence[ChannelAdapter]] | None = None

    def adapters(self) -> Sequence[ChannelAdapter]:
        """The adapters for the keys as they are now, active keys' first; Missing if the keys went away."""
        material = self._keyring.get(KEYS_OF[self.name])
        built = self._built
        if built is None or built[0] is not material:
            try:
                adapters = self._builder(self._context, material)
            except ValueError as exc:  # the adapter's own checks (an id's shape, a key's size)
                raise Missing(f"the adapter refused its configuration: {exc}") from None
            built = self._built = (material, adapters)
        return built[1]

    def _usable(self) -> Sequence[ChannelAdapter]:
        """The adapters for a call at run time. Keys that stopped being usable since start-up (no active one left, an
        expired platform certificate, sealed under another KEK) make the channel unavailable, as if it did not
        answer: every caller already handles ChannelUnavailable (503, left for the sweep), none handles Missing."""
        try:
            return self.adapters()
        except (Missing, SealError) as exc:
            reason = str(exc) if isinstance(exc, Missing) else f"its keys cannot be read ({type(exc).__name__})"
            log.error("payment channel %s is unusable: %s", self.name, reason)
            raise ChannelUnavailable(f"{self.name}: {reason}") from None

    def _current(self) -> ChannelAdapter:
        return self._usable()[0]

    def __getattr__(self, attribute: str) -> Any:
        # Calls beyond the interface (a sandbox hook, the bank's `gateway`) reach the current adapter.
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return getattr(self._current(), attribute)

    def read_callback(self, headers: Mapping[str, str], body: bytes, *, now: float) -> VerifiedCallback:
        candidates = self._usable()
        retry_on = _KEY_REFUSALS.get(self.name)
        for index, adapter in enumerate(candidates):
            try:
                return adapter.read_callback(headers, body, now=now)
            except ChannelRefusal as refusal:
                if refusal.reason != retry_on or index == len(candidates) - 1:
                    raise
        raise AssertionError("unreachable: a builder returns at least one adapter")

    def acknowledge(self, refusal: ChannelRefusal | None = None, *, failed: bool = False) -> Acknowledgement:
        return self._current().acknowledge(refusal, failed=failed)

    def create_payment(self, order: PaymentOrderRef) -> PaymentStart:
        return self._current().create_payment(order)

    def query_payment(self, order_no: str) -> ChannelTrade:
        return self._current().query_payment(order_no)

    def close_payment(self, order_no: str) -> CloseResult:
        return self._current().close_payment(order_no)

    def refund(self, request: RefundRequest) -> RefundStatus:
        return self._current().refund(request)

    def query_refund(self, order_no: str, refund_no: str) -> RefundStatus:
        return self._current().query_refund(order_no, refund_no)

    def fetch_statement(self, day: date) -> bytes:
        return self._current().fetch_statement(day)

    def parse_statement(self, data: Iterable[bytes]) -> Iterator[StatementLine]:
        return self._current().parse_statement(data)

    def __repr__(self) -> str:
        return f"KeyedAdapter({self.name!r})"


# --- start-up ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    channels: registry.Channels
    left_out: Mapping[str, str]  # channel -> what is missing
    clients: Sequence[httpx.Client]

    def close(self) -> None:
        for client in self.clients:
            client.close()


def build_channels(
    settings: Settings,
    keyring: ChannelKeyring,
    *,
    sessions: sessionmaker[Session] | None = None,
    clock: Callable[[], float] = time.time,
    transports: Mapping[str, httpx.BaseTransport] | None = None,
) -> Built:
    """Adapters for the enabled channels that have what they need; the rest with the reason they are left out.
    `transports` (tests, the sandbox) replaces a channel's network."""
    adapters: dict[str, ChannelAdapter] = {}
    left_out: dict[str, str] = {}
    clients: list[httpx.Client] = []
    for name in enabled(settings):
        client = http_client(base_url(settings, name), settings, (transports or {}).get(name))
        adapter = KeyedAdapter(name, Context(settings, client, sessions, clock), keyring, BUILDERS[name])
        try:
            adapter.adapters()
        except (Missing, SQLAlchemyError, SealError) as exc:
            client.close()
            left_out[name] = str(exc) if isinstance(exc, Missing) else f"its keys cannot be read ({type(exc).__name__})"
            log.error(
                "payment channel %s is left out: %s; its callbacks are answered 503 until it is set up",
                name,
                left_out[name],
            )
            continue
        clients.append(client)
        adapters[name] = adapter  # type: ignore[assignment]
    return Built(registry.Channels(adapters, clock=clock), left_out, clients)


def install_channels(
    app: FastAPI,
    runtime: Any,
    *,
    clock: Callable[[], float] = time.time,
    transports: Mapping[str, httpx.BaseTransport] | None = None,
) -> Built:
    """authsvc/app.py: the enabled channels onto the application (`app.state.payment_channel_clients` keeps their
    HTTP clients; `Built.close` closes them)."""
    keyring = ChannelKeyring(runtime.sessions, runtime.sealer, cache_seconds=runtime.settings.key_cache_seconds)
    built = build_channels(runtime.settings, keyring, sessions=runtime.sessions, clock=clock, transports=transports)
    previous = getattr(app.state, "payment_channel_clients", None)
    registry.install(app, built.channels)
    app.state.payment_channel_clients = built
    if previous is not None:
        previous.close()
    if built.channels.names():
        log.info("payment channels: %s", ", ".join(built.channels.names()))
    return built
