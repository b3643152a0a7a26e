"""SSO sessions: started when a browser login completes, shared by every portal the browser then signs in to,
ended by logout (which revokes the grants issued under it and queues back-channel logout tokens).

The cookie is `<sid>.<secret>`: the sid finds the row, the secret is checked against its keyed digest in constant
time, so neither a database leak nor knowing a sid (ID tokens carry it) yields a usable cookie.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy.orm import Session

from authsvc.audit import service as audit
from authsvc.config import Settings
from authsvc.database import utcnow
from authsvc.runtime import Runtime
from authsvc.sessions import repository
from authsvc.sessions.models import SsoSession
from authsvc.tokens.issuing import Authentication
from keys import hmac_keys

COOKIE = "sscard_session"
EVENT_START = "sso_session_started"
EVENT_END = "sso_session_ended"
_PART = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class CookieSpec:
    name: str
    max_age: int
    secure: bool
    httponly: bool = True
    # Sent on the top-level navigation from a portal to /authorize, not on cross-site POSTs.
    samesite: Literal["lax", "strict", "none"] = "lax"
    path: str = "/"


def cookie_spec(settings: Settings) -> CookieSpec:
    secure = settings.issuer.startswith("https://")
    # "__Host-": a portal on a sibling subdomain cannot plant its own session cookie in a citizen's browser (a
    # login CSRF: the citizen would silently use the planter's session at every portal). Needs Secure and path "/".
    return CookieSpec(("__Host-" if secure else "") + COOKIE, settings.session_ttl, secure)


def _parse(cookie: str | None) -> tuple[str, str] | None:
    if not cookie or len(cookie) > 128:
        return None
    sid, _, secret = cookie.partition(".")
    # Both parts are base64url: anything else (a NUL, say, which PostgreSQL refuses) never reaches the database.
    return (sid, secret) if _PART.fullmatch(sid) and _PART.fullmatch(secret) else None


def current(db: Session, runtime: Runtime, cookie: str | None, *, now: datetime | None = None) -> SsoSession | None:
    """The browser's live session, or None (no cookie, forged, ended or expired)."""
    parsed = _parse(cookie)
    if parsed is None:
        return None
    row = repository.by_sid(db, parsed[0])
    if row is None or not runtime.hmac_keys.verify(row.cookie_digest, parsed[1]):
        return None
    return row if is_live(row, now) else None


def is_live(session: SsoSession, now: datetime | None = None) -> bool:
    return session.ended_at is None and session.expires_at > (now or utcnow())


def live_for_redemption(db: Session, sid: str) -> bool:
    """Whether a code of session `sid` may still become a grant. The row is locked: a logout running at the same
    time either ends the session first (the code is refused) or finds the grant and revokes it."""
    row = repository.by_sid(db, sid, lock=True)
    return row is not None and is_live(row)


def _new_secret(runtime: Runtime) -> tuple[str, str]:
    secret = secrets.token_urlsafe(32)
    return secret, runtime.hmac_keys.digest(hmac_keys.SESSION_COOKIE, secret)


def start(db: Session, runtime: Runtime, auth: Authentication) -> tuple[SsoSession, str]:
    """A new session and its cookie value (shown once; only its digest is stored)."""
    secret, digest = _new_secret(runtime)
    now = utcnow()
    row = repository.add(
        db,
        SsoSession(
            sid=secrets.token_urlsafe(24),
            cookie_digest=digest,
            subject=auth.subject,
            acr=auth.acr,
            amr=list(auth.amr),
            auth_time=datetime.fromtimestamp(auth.auth_time, UTC),
            created_at=now,
            expires_at=now + timedelta(seconds=runtime.settings.session_ttl),
        ),
    )
    audit.record(db, event=EVENT_START, outcome="success", subject=auth.subject, detail={"acr": auth.acr})
    return row, f"{row.sid}.{secret}"


def reauthenticated(db: Session, runtime: Runtime, session: SsoSession, auth: Authentication) -> str:
    """The same person authenticated again (max_age, prompt=login, step-up): the session keeps its sid and clients
    and takes `auth` as it is. A step-up's `auth` already holds the session's earlier factors (merged by
    `authsvc.login.pending.complete`); a fresh login's does not, and must not gain them: with `auth_time` now, a
    level reached hours ago would pass for a fresh one (max_age). Returns the new cookie value: the secret is
    rotated, so a cookie obtained before the re-authentication (fixed or stolen) does not gain its level."""
    secret, session.cookie_digest = _new_secret(runtime)
    session.auth_time = datetime.fromtimestamp(auth.auth_time, UTC)
    session.acr = auth.acr
    session.amr = list(auth.amr)
    session.expires_at = utcnow() + timedelta(seconds=runtime.settings.session_ttl)
    db.flush()
    return f"{session.sid}.{secret}"


def signed_in(db: Session, session: SsoSession, client_id: str) -> None:
    repository.touch_client(db, session, client_id, utcnow())


def end(db: Session, runtime: Runtime, session: SsoSession, *, why: str) -> None:
    """End the session in the caller's transaction: grants revoked, a logout token queued for every portal."""
    from authsvc.oauth.grants import revoke_session
    from authsvc.oidc import backchannel

    # Locked and re-read: of two concurrent logouts (two tabs; a portal's and the citizen's) only one queues the
    # logout tokens; the other waits here, then sees the session ended.
    db.refresh(session, with_for_update=True)
    if session.ended_at is not None:
        return
    deliveries = backchannel.plan(db, runtime, session, repository.client_ids(db, session))  # before any write
    session.ended_at = utcnow()
    revoke_session(db, runtime, session.sid)
    queued = backchannel.enqueue(db, deliveries)
    audit.record(
        db, event=EVENT_END, outcome="success", reason=why, subject=session.subject, detail={"logout_tokens": queued}
    )
    db.flush()


def end_all(db: Session, runtime: Runtime, subject: str, *, why: str) -> int:
    """Sign the person out everywhere, in the caller's transaction: each live session ended as by a logout (its
    grants revoked, a logout token queued for each of its portals). Returns how many sessions ended."""
    rows = repository.live_of_subject(db, subject, utcnow())
    for row in rows:
        end(db, runtime, row, why=why)
    return len(rows)
