"""Grants and refresh tokens: creation, rotation on every use, reuse detection, revocation.

A refresh token is `<id>.<secret>`: found by id, verified by the keyed digest of the whole value (keys/hmac_keys.py,
label `refresh_token`). Exchanging it marks it used with one conditional UPDATE, so of two concurrent exchanges
only one wins; the other is reuse, and reuse of a spent token revokes the whole grant (RFC 9700 §4.14.2): whoever
holds a copy, the thief or the client, loses it. A revoked grant is also put in the shared store for as long as an
access token can live, so its access tokens fail introspection and resource checks at once.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from authsvc.audit import service as audit
from authsvc.database import utcnow
from authsvc.oauth.models import OAuthGrant, RefreshToken
from authsvc.runtime import Runtime
from authsvc.store import Store

REFRESH_LABEL = "refresh_token"  # the HMAC key's label
_REFRESH = re.compile(r"([0-9a-f]{32})\.([A-Za-z0-9_-]{43})")


def new_id() -> str:
    return secrets.token_hex(16)


def _revoked_key(grant_id: str) -> str:
    return f"revoked-grant:{grant_id}"


def is_revoked(store: Store, grant_id: str) -> bool:
    return store.get(_revoked_key(grant_id)) is not None


def create(
    db: Session,
    *,
    client_id: str,
    subject: str,
    sid: str | None,
    scope: list[str],
    acr: str,
    amr: list[str],
    auth_time: int,
    ttl: int,
    now: datetime | None = None,
) -> OAuthGrant:
    now = now or utcnow()
    grant = OAuthGrant(
        id=new_id(),
        client_id=client_id,
        subject=subject,
        sid=sid,
        scope=" ".join(scope),
        acr=acr,
        amr=list(amr),
        auth_time=datetime.fromtimestamp(auth_time, UTC),
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
    )
    db.add(grant)
    return grant


def issue_refresh_token(db: Session, runtime: Runtime, grant: OAuthGrant, now: datetime | None = None) -> str:
    now = now or utcnow()
    token_id = new_id()
    value = f"{token_id}.{secrets.token_urlsafe(32)}"
    db.add(
        RefreshToken(
            id=token_id,
            grant_id=grant.id,
            digest=runtime.hmac_keys.digest(REFRESH_LABEL, value),
            created_at=now,
            # A grant's lifetime is absolute: rotation never extends it.
            expires_at=min(now + timedelta(seconds=runtime.settings.refresh_token_ttl), grant.expires_at),
        )
    )
    return value


def find_refresh_token(db: Session, runtime: Runtime, value: str) -> tuple[RefreshToken, OAuthGrant] | None:
    """The token and its grant when `value` is a refresh token this service issued (used or not)."""
    match = _REFRESH.fullmatch(value)
    if match is None:
        return None
    row = db.execute(
        select(RefreshToken, OAuthGrant)
        .join(OAuthGrant, OAuthGrant.id == RefreshToken.grant_id)
        .where(RefreshToken.id == match.group(1))
    ).one_or_none()
    if row is None or not runtime.hmac_keys.verify(row[0].digest, value):
        return None
    return row[0], row[1]


@dataclass(frozen=True)
class Rotated:
    grant: OAuthGrant
    refresh_token: str


@dataclass(frozen=True)
class Refused:
    description: str
    error: str = "invalid_grant"


def live(grant: OAuthGrant, now: datetime) -> bool:
    return grant.revoked_at is None and grant.expires_at > now


def rotate(
    db: Session,
    runtime: Runtime,
    value: str,
    *,
    client_id: str,
    scope: list[str] | None = None,
    now: datetime | None = None,
) -> Rotated | Refused:
    """Spend a refresh token and issue its successor. `scope`, when asked, must be within the grant's (checked
    before anything is spent). Refusals are returned, not raised, so that the caller's unit of work commits a
    revocation for reuse."""
    now = now or utcnow()
    found = find_refresh_token(db, runtime, value)
    if found is None:
        return Refused("unknown refresh token")
    token, grant = found
    if grant.client_id != client_id:
        # Not this client's: no state change (the caller may be probing), and nothing said about whose it is.
        return Refused("unknown refresh token")
    if scope and not set(scope) <= set(grant.scope.split()):
        return Refused("the requested scope exceeds the grant's", "invalid_scope")
    if token.used_at is None and live(grant, now) and token.expires_at > now:
        spent = db.execute(
            update(RefreshToken)
            .where(RefreshToken.id == token.id, RefreshToken.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        if spent.rowcount == 1:  # type: ignore[attr-defined]
            return Rotated(grant, issue_refresh_token(db, runtime, grant, now))
    elif token.used_at is None:
        return Refused("the refresh token has expired or its grant was revoked")
    if grant.revoked_at is None:
        revoke(db, runtime, grant, "refresh_token_reused", now=now)
        audit.record(
            db,
            event="refresh_token_reused",
            outcome="failure",
            reason="grant_revoked",
            subject=grant.subject,
            detail={"client_id": grant.client_id, "grant_id": grant.id},
        )
    return Refused("the refresh token was already used; the grant is revoked")


def revoke(db: Session, runtime: Runtime, grant: OAuthGrant, reason: str, *, now: datetime | None = None) -> bool:
    """Revoke one grant (False if it already was). The store entry reaches its access tokens at once."""
    now = now or utcnow()
    done = db.execute(
        update(OAuthGrant)
        .where(OAuthGrant.id == grant.id, OAuthGrant.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
        .execution_options(synchronize_session=False)
    )
    grant.revoked_at, grant.revoked_reason = now, reason
    runtime.store.put(_revoked_key(grant.id), b"1", runtime.settings.access_token_ttl)
    return done.rowcount == 1  # type: ignore[attr-defined]


def revoke_by_id(db: Session, runtime: Runtime, grant_id: str, reason: str) -> bool:
    grant = db.get(OAuthGrant, grant_id)
    return grant is not None and revoke(db, runtime, grant, reason)


def revoke_session(db: Session, runtime: Runtime, sid: str) -> int:
    """Revoke every live grant issued under the SSO session `sid` (logout); the number revoked."""
    grants = db.scalars(select(OAuthGrant).where(OAuthGrant.sid == sid, OAuthGrant.revoked_at.is_(None))).all()
    return sum(revoke(db, runtime, grant, "session_ended") for grant in grants)


def get(db: Session, grant_id: str) -> OAuthGrant | None:
    if not re.fullmatch(r"[0-9a-f]{32}", grant_id):
        return None
    return db.get(OAuthGrant, grant_id)
