"""Configuration: environment variables with the `SSCARD_` prefix, validated once at start."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(Exception):
    """A bad configuration value; the message names the variable and what is wrong with it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SSCARD_", extra="ignore", frozen=True)

    # Where the embedded default keeps its files (SQLite database, key-encryption key).
    home: Path = Path("var")
    database_url: str = ""
    # `memory://` is the in-process store: single process only, for the embedded default.
    redis_url: str = "memory://"
    redis_prefix: str = "sscard:"
    issuer: str = "http://127.0.0.1:8000"
    key_dir: Path | None = None
    # Fernet keys (urlsafe base64, comma-separated, newest first) that seal private key material at rest.
    # Unset: a key file in key_dir is created on first use (embedded default only).
    kek: str | None = Field(default=None, repr=False)
    access_token_audience: str = "sscard-api"  # noqa: S105 - an audience name, not a secret
    id_token_ttl: Annotated[int, Field(ge=30, le=3600)] = 300
    access_token_ttl: Annotated[int, Field(ge=30, le=3600)] = 600
    challenge_ttl: Annotated[int, Field(ge=10, le=600)] = 60
    signature_window: Annotated[int, Field(ge=5, le=900)] = 120
    # How long a worker may keep using a cached key before re-reading key states.
    key_cache_seconds: Annotated[int, Field(ge=0, le=300)] = 30
    throttle_window: Annotated[int, Field(ge=10, le=86400)] = 900
    throttle_card_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    throttle_terminal_failures: Annotated[int, Field(ge=1, le=100000)] = 30
    # Single sign-on (docs/sso.md).
    code_ttl: Annotated[int, Field(ge=10, le=600)] = 60
    par_ttl: Annotated[int, Field(ge=10, le=600)] = 90
    # A browser login waiting for its authenticator (card via `sscard helper`, later a phone or a face check).
    pending_login_ttl: Annotated[int, Field(ge=30, le=3600)] = 600
    session_ttl: Annotated[int, Field(ge=300, le=86400)] = 8 * 3600
    refresh_token_ttl: Annotated[int, Field(ge=300, le=90 * 86400)] = 7 * 86400
    # DPoP proofs (RFC 9449): accepted iat age, jti memory and a server nonce's period. (A client assertion is
    # bounded by its own exp instead: at most an hour ahead, oauth/client_auth.py.)
    proof_window: Annotated[int, Field(ge=10, le=600)] = 60
    # Require a server-issued DPoP nonce in every proof (RFC 9449 §8); off, nonces are still accepted.
    dpop_nonce_required: bool = False
    # Where the login page finds `sscard helper` on the citizen's computer (loopback only).
    helper_url: str = "http://127.0.0.1:24727"
    logout_retry_base: Annotated[int, Field(ge=1, le=3600)] = 10
    logout_max_attempts: Annotated[int, Field(ge=1, le=50)] = 8
    # A refund above this many fen (with the order's earlier refunds) waits for a second operator's approval.
    refund_approval_above_fen: Annotated[int, Field(ge=0, le=10**12)] = 500_000
    # How long a payment order may stay unpaid before it is closed (at its channel first, payments/recovery/).
    payment_order_ttl: Annotated[int, Field(ge=300, le=7 * 86400)] = 2 * 3600
    # The recovery sweep in every worker every this many seconds; 0 (default): off, run `authsvc payments sweep`
    # from cron instead.
    payment_sweep_interval: Annotated[int, Field(ge=0, le=3600)] = 0
    # The operator's contribution tiers, a JSON or TOML file (docs/payments.md); unset: the built-in table, which
    # serves the embedded default and tests only. Read and validated at start.
    payment_tiers: Path | None = None
    # Payment channels this deployment runs (payments/channels/setup.py), comma-separated from: wechatpay, alipay,
    # bank, card, withholding. Their keys live in keys/ (`authsvc channel-keys`); notify URLs are issuer-based.
    payment_channels: str = ""
    payment_http_timeout: Annotated[float, Field(ge=1, le=60)] = 10.0
    wechatpay_mchid: str = ""
    wechatpay_appid: str = ""
    wechatpay_base_url: str = "https://api.mch.weixin.qq.com"
    alipay_app_id: str = ""
    alipay_gateway_url: str = "https://openapi.alipay.com/gateway.do"
    bank_merchant_id: str = ""
    bank_base_url: str = ""  # the bank gateway; the card account and withholding use it too
    # The electronic social security card (docs/ecard.md): active e-cards per person; how long a login page's QR
    # code is good for (the page fetches a new one before then); how recent the highest-level login must be to enrol.
    ecard_max_active: Annotated[int, Field(ge=1, le=20)] = 3
    ecard_qr_ttl: Annotated[int, Field(ge=10, le=300)] = 60
    ecard_enrol_max_age: Annotated[int, Field(ge=60, le=3600)] = 600

    # The real-person (实人) face check through a liveness vendor (docs/liveness.md). No vendor name: no face check
    # is offered. Its keys live in keys/ (`authsvc channel-keys import --channel liveness ...`).
    liveness_vendor: str = ""  # the vendor's name in our callback URL, /v1/liveness/callbacks/<name>
    liveness_base_url: str = ""  # the vendor's API
    liveness_app_id: str = ""  # our account at the vendor
    # A verdict whose comparison score (0-100) is below this fails, live or not.
    liveness_min_score: Annotated[float, Field(ge=0, le=100)] = 80.0
    # How long the citizen has for the capture; a verdict after that is recorded as late and completes nothing.
    liveness_session_ttl: Annotated[int, Field(ge=30, le=900)] = 180
    # Callbacks dated more than this many seconds ago are refused (past-only window) ...
    liveness_callback_window: Annotated[int, Field(ge=10, le=900)] = 300
    # ... and those dated further ahead than this (the vendor's clock may run a little fast).
    liveness_callback_skew: Annotated[int, Field(ge=0, le=60)] = 5

    @field_validator("liveness_vendor")
    @classmethod
    def _liveness_vendor(cls, value: str) -> str:
        import re

        if value and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", value):
            raise ValueError("must be a short lower-case name (a-z, 0-9, -), used in the callback URL")
        return value

    @field_validator("liveness_base_url")
    @classmethod
    def _liveness_base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if value and (parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("payment_channels")
    @classmethod
    def _payment_channels(cls, value: str) -> str:
        known = ("wechatpay", "alipay", "bank", "card", "withholding")
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown or len(set(names)) != len(names):
            raise ValueError(f"must be distinct names from: {', '.join(known)}")
        return ",".join(names)

    @field_validator("wechatpay_base_url", "alipay_gateway_url", "bank_base_url")
    @classmethod
    def _channel_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if value and (parts.scheme not in ("https", "http") or not parts.netloc or parts.fragment):
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("must be an http(s) URL without query or fragment, e.g. https://id.example.gov.cn")
        return value.rstrip("/")

    @field_validator("helper_url")
    @classmethod
    def _helper_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if (
            parts.scheme != "http"
            or parts.hostname not in ("127.0.0.1", "localhost", "::1")
            or parts.path not in ("", "/")
        ):
            raise ValueError("must be http://127.0.0.1:PORT: the helper listens on the loopback interface only")
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("memory", "redis", "rediss"):
            raise ValueError("must be memory:// (in-process) or a redis:// or rediss:// URL")
        return value

    @field_validator("payment_tiers")
    @classmethod
    def _payment_tiers(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        from payments.orders.domain import OrderError
        from payments.orders.service import configured_tiers

        try:
            configured_tiers(value)  # read once here, so a bad file stops the start with its problem named
        except OrderError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("kek")
    @classmethod
    def _kek(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from cryptography.fernet import Fernet

        try:
            for part in value.split(","):
                Fernet(part.strip())
        except ValueError as exc:
            raise ValueError("must be comma-separated Fernet keys (32 bytes, urlsafe base64)") from exc
        return value

    @model_validator(mode="after")
    def _derived(self) -> Settings:
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.home / 'sscard.db'}")
        scheme = urlsplit(self.database_url).scheme
        if not (scheme.startswith("sqlite") or scheme.startswith("postgresql")):
            raise ValueError("SSCARD_DATABASE_URL must be sqlite:///PATH or postgresql+psycopg://...")
        if scheme == "postgresql":  # psycopg 3 is the driver we ship
            object.__setattr__(self, "database_url", "postgresql+psycopg" + self.database_url[len("postgresql") :])
        if self.key_dir is None:
            object.__setattr__(self, "key_dir", self.home / "keys")
        if not self.embedded and self.redis_url.startswith("memory:"):
            # Each worker would keep its own challenges, nonces and counters: replays and lost logins.
            raise ValueError(
                "SSCARD_REDIS_URL must be a redis:// URL with PostgreSQL: the in-process store serves the "
                "single-process embedded default (SQLite) only"
            )
        return self

    @property
    def embedded(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks.json"

    @property
    def max_token_ttl(self) -> int:
        return max(self.id_token_ttl, self.access_token_ttl)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; every bad value is reported by variable name."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = "_".join(str(p) for p in error["loc"]).upper()
            name = f"SSCARD_{field}" if field else "configuration"
            lines.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def env_for_child(settings: Settings) -> dict[str, str]:
    """The environment a child process needs to see the same configuration."""
    env = dict(os.environ)
    env.update(
        SSCARD_HOME=str(settings.home),
        SSCARD_DATABASE_URL=settings.database_url,
        SSCARD_REDIS_URL=settings.redis_url,
        SSCARD_ISSUER=settings.issuer,
        SSCARD_KEY_DIR=str(settings.key_dir),
        # The login page names the helper's URL: a child serving it must use the one the parent chose.
        SSCARD_HELPER_URL=settings.helper_url,
    )
    return env
