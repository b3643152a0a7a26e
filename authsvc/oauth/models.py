"""Grants (one per authorization: a login's consent to a client) and their refresh tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from authsvc.database import Base, UTCDateTime, utcnow


class OAuthGrant(Base):
    __tablename__ = "oauth_grants"

    # Random, and carried in the grant's access tokens (`grant_id`) so that revoking the grant reaches them.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id"), index=True)
    # The public subject (Cardholder.subject); pairwise subjects are derived from it per client.
    subject: Mapped[str] = mapped_column(String(32), index=True)
    sid: Mapped[str | None] = mapped_column(String(64), index=True)
    scope: Mapped[str] = mapped_column(Text)
    acr: Mapped[str] = mapped_column(String(64))
    amr: Mapped[list[str]] = mapped_column(JSON, default=list)
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Absolute: refreshing never extends a grant beyond this. Indexed, with revoked_at, for `authsvc purge`.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(32))


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    # The token is `<id>.<secret>`: looked up by id, verified by the keyed digest of the whole token.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("oauth_grants.id"), index=True)
    digest: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Set once, atomically, when the token is exchanged; a second use is reuse and revokes the grant.
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
