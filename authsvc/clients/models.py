"""The client registry table. A client's settings are the operator's decisions at registration; nothing a client
sends at run time can widen them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from authsvc.database import Base, UTCDateTime, utcnow


class AuthMethod(StrEnum):
    PRIVATE_KEY_JWT = "private_key_jwt"  # RFC 7523: the client signs an assertion with its own key
    CLIENT_SECRET_BASIC = "client_secret_basic"  # noqa: S105 - RFC 6749 §2.3.1 method name
    # A public native app (RFC 8252 §8.4: an app on citizens' phones cannot keep a secret); PKCE binds its codes.
    # Code flow only, loopback or https redirects; never introspection, PAR or FAPI (clients/service.validate).
    NONE = "none"


class SubjectType(StrEnum):
    PUBLIC = "public"
    PAIRWISE = "pairwise"  # OpenID Connect Core §8.1: a different `sub` per sector


class ClientStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class GrantType(StrEnum):
    AUTHORIZATION_CODE = "authorization_code"
    REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a grant type name
    CLIENT_CREDENTIALS = "client_credentials"


class OAuthClient(Base):
    __tablename__ = "oauth_clients"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    # Shown to citizens on the login page and by `sscard helper` before the card signs.
    name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default=ClientStatus.ACTIVE)
    auth_method: Mapped[str] = mapped_column(String(32))
    # keys.hmac_keys digest (`kid$hex`) of the generated secret; the secret itself is shown once and never stored.
    secret_digest: Mapped[str | None] = mapped_column(String(128))
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    jwks_uri: Mapped[str | None] = mapped_column(Text)
    redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    grant_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The assurance levels (authsvc.tokens.assurance) the client may ask for; the first is its default.
    acr_values: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The lowest level at which the social security number is released to this client; None: never.
    ssn_min_acr: Mapped[str | None] = mapped_column(String(64))
    # FAPI 2.0 security profile: pushed authorization requests, DPoP-bound tokens and private_key_jwt required.
    fapi: Mapped[bool] = mapped_column(Boolean, default=False)
    require_dpop: Mapped[bool] = mapped_column(Boolean, default=False)
    subject_type: Mapped[str] = mapped_column(String(16), default=SubjectType.PUBLIC)
    sector_identifier: Mapped[str | None] = mapped_column(String(255))
    backchannel_logout_uri: Mapped[str | None] = mapped_column(Text)
    # A resource server: may call token introspection.
    may_introspect: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @property
    def active(self) -> bool:
        return self.status == ClientStatus.ACTIVE
