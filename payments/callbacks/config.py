"""Channel configuration for the callbacks inbox, handed to the application at runtime.

`configure(app, CallbackConfig(...))` installs callback-only adapters for the channels given (the routes find them
in payments/channels/registry.py); the full adapters, with their request keys from `keys/`, are installed the same
way by the service's start-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI

from payments.channels import registry
from payments.channels.alipay_adapter import AlipayAdapter, AlipayConfig
from payments.channels.base import ChannelAdapter
from payments.channels.wechatpay_adapter import WechatPayAdapter, WechatPayConfig

__all__ = ["AlipayConfig", "CallbackConfig", "WechatPayConfig", "configure"]


@dataclass(frozen=True)
class CallbackConfig:
    """A channel left as None is not configured: its callbacks are answered as our failure (the channel retries)."""

    wechatpay: WechatPayConfig | None = None
    alipay: AlipayConfig | None = None
    clock: Callable[[], float] = time.time


def configure(app: FastAPI, config: CallbackConfig) -> None:
    adapters: dict[str, ChannelAdapter] = {}
    if config.wechatpay is not None:
        adapters["wechatpay"] = WechatPayAdapter(config.wechatpay)  # type: ignore[assignment]
    if config.alipay is not None:
        adapters["alipay"] = AlipayAdapter(config.alipay)  # type: ignore[assignment]
    registry.install(app, registry.Channels(adapters, clock=config.clock))
