"""Channel configuration for the callbacks inbox, handed to the application at runtime.

For now the operator (or a test) builds a `CallbackConfig` and installs it with `configure(app, config)`. A later
step moves the platform keys, the APIv3 key and the Alipay public key into `keys/` (sealed and rotatable) and builds
this object from there; the routes only ever see this shape.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI

from payments.channels.wechatpay import PlatformKeys


@dataclass(frozen=True)
class WechatPayConfig:
    mchid: str
    platform_keys: PlatformKeys  # certificates and PUB_KEY_ID_ public keys together: both modes verify at once
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


@dataclass(frozen=True)
class AlipayConfig:
    app_id: str
    public_key: rsa.RSAPublicKey = field(repr=False)
    max_age_seconds: int = 900
    future_skew_seconds: int = 60


@dataclass(frozen=True)
class CallbackConfig:
    """A channel left as None is not configured: its callbacks are answered as our failure (the channel retries)."""

    wechatpay: WechatPayConfig | None = None
    alipay: AlipayConfig | None = None
    clock: Callable[[], float] = time.time  # injectable so that tests need no real-time windows


def configure(app: FastAPI, config: CallbackConfig) -> None:
    app.state.payment_callbacks = config


def current(app: FastAPI) -> CallbackConfig:
    return getattr(app.state, "payment_callbacks", None) or CallbackConfig()
