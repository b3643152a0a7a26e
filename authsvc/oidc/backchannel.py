"""Back-channel logout (OpenID Connect Back-Channel Logout 1.0) through an outbox.

Ending a session writes one `logout_deliveries` row per portal with a back-channel logout URI, in the transaction
that ends the session: a logout is never lost to a crash between the commit and the HTTP call. Deliveries are then
attempted (right after the logout, and by the loop every worker runs), retried with exponential backoff while a
portal is down, and given up after `logout_max_attempts`.

Several workers share the work: a pass claims due rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL) and hides them for
a lease while it posts, so no two workers post the same row at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from authsvc.clients.models import OAuthClient
from authsvc.database import unit_of_work, utcnow
from authsvc.oidc.subjects import subject_for
from authsvc.runtime import Runtime
from authsvc.sessions.models import DeliveryStatus, LogoutDelivery, SsoSession

EVENT = "http://schemas.openid.net/event/backchannel-logout"
TOKEN_TTL = 120  # the token is signed at each attempt, so a short lifetime costs nothing
LEASE = timedelta(seconds=60)  # a claimed row is hidden from other workers this long while it is posted
MAX_BACKOFF = timedelta(hours=1)
HTTP_TIMEOUT = 5.0
log = logging.getLogger("sscard.logout")
_clock = time.monotonic  # how long a pass has run (tests replace it)


def plan(db: Session, runtime: Runtime, session: SsoSession, client_ids: list[str]) -> list[LogoutDelivery]:
    """The deliveries for every client of the session that has a back-channel logout URI, not yet added.

    Called before the transaction writes anything: a pairwise subject may need its HMAC key created, in a
    transaction of its own, which SQLite (one writer) would block behind ours."""
    if not client_ids:
        return []
    query = select(OAuthClient).where(
        OAuthClient.client_id.in_(client_ids), OAuthClient.backchannel_logout_uri.is_not(None)
    )
    now = utcnow()
    return [
        LogoutDelivery(
            client_id=client.client_id,
            uri=client.backchannel_logout_uri,
            claims={
                "aud": client.client_id,
                "sub": subject_for(client, session.subject, runtime.hmac_keys),
                "sid": session.sid,
                "jti": secrets.token_urlsafe(16),
            },
            status=DeliveryStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        for client in db.scalars(query.order_by(OAuthClient.id))
    ]


def enqueue(db: Session, deliveries: list[LogoutDelivery]) -> int:
    """Add the planned deliveries to the outbox, in the transaction that ends the session."""
    db.add_all(deliveries)
    db.flush()
    return len(deliveries)


def logout_token(runtime: Runtime, claims: dict[str, Any], now: int) -> str:
    # No nonce: §2.4 forbids it, so that a logout token can never pass as an ID token.
    payload = {"iss": runtime.settings.issuer, **claims, "iat": now, "exp": now + TOKEN_TTL, "events": {EVENT: {}}}
    return runtime.keyring.sign(payload, typ="logout+jwt")


@dataclass(frozen=True)
class _Claimed:
    id: int
    uri: str
    claims: dict[str, Any]
    attempts: int


@dataclass
class Report:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0


def _claim(runtime: Runtime, now: datetime, limit: int) -> list[_Claimed]:
    with unit_of_work(runtime.sessions) as db:
        query = (
            select(LogoutDelivery)
            .where(LogoutDelivery.status == DeliveryStatus.PENDING, LogoutDelivery.next_attempt_at <= now)
            .order_by(LogoutDelivery.next_attempt_at, LogoutDelivery.id)
            .limit(limit)
        )
        if db.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        claimed = []
        for row in db.scalars(query):
            row.attempts += 1
            row.next_attempt_at = now + LEASE
            claimed.append(_Claimed(row.id, row.uri, dict(row.claims), row.attempts))
        return claimed


def backoff(runtime: Runtime, attempts: int) -> timedelta:
    """Wait after the `attempts`-th failure: base, 2×base, 4×base, ... at most an hour."""
    return min(timedelta(seconds=runtime.settings.logout_retry_base * 2 ** (attempts - 1)), MAX_BACKOFF)


def _settle(runtime: Runtime, item: _Claimed, error: str | None, now: datetime, report: Report) -> None:
    with unit_of_work(runtime.sessions) as db:
        row = db.get(LogoutDelivery, item.id, with_for_update=True)
        # Fenced: past our lease another worker may have claimed the row (its `attempts` moved on) or settled it.
        # A delivery counts whoever made it; a failure only if the attempt is still ours.
        if row is None or row.status != DeliveryStatus.PENDING:
            return
        if error is not None and row.attempts != item.attempts:
            return
        if error is None:
            row.status, row.delivered_at, row.last_error = DeliveryStatus.DELIVERED, now, None
            report.delivered += 1
        elif row.attempts >= runtime.settings.logout_max_attempts:
            row.status, row.last_error = DeliveryStatus.FAILED, error[:200]
            report.failed += 1
            log.warning("back-channel logout to client %s given up after %d attempts", row.client_id, row.attempts)
        else:
            row.next_attempt_at, row.last_error = now + backoff(runtime, row.attempts), error[:200]
            report.retrying += 1


def _release(runtime: Runtime, item: _Claimed, now: datetime) -> None:
    """Give back a claimed row not attempted before the lease ran out (a slow pass): posting it now could race the
    worker that may have claimed it since; if none has, the next pass takes it, without an attempt counted."""
    with unit_of_work(runtime.sessions) as db:
        row = db.get(LogoutDelivery, item.id, with_for_update=True)
        if row is not None and row.status == DeliveryStatus.PENDING and row.attempts == item.attempts:
            row.attempts -= 1
            row.next_attempt_at = now


def _post(http: httpx.Client, runtime: Runtime, item: _Claimed, now: datetime) -> str | None:
    token = logout_token(runtime, item.claims, int(now.timestamp()))
    try:
        response = http.post(item.uri, data={"logout_token": token})
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    # §2.8: 200 OK on success (204 accepted too); anything else is the portal's failure, to be retried.
    return None if response.status_code in (200, 204) else f"HTTP {response.status_code}"


def deliver_due(
    runtime: Runtime, *, http: httpx.Client | None = None, now: datetime | None = None, limit: int = 50
) -> Report:
    """One pass: attempt every delivery that is due (at `now`, for tests and the CLI)."""
    now = now or utcnow()
    started = _clock()
    report = Report()
    claimed = _claim(runtime, now, limit)
    if not claimed:
        return report
    own = http is None
    client = http or httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=False)

    def at() -> datetime:
        # A pass behind a slow portal can outlast a logout token's lifetime and the lease: each token is signed,
        # and each outcome timed, when it happens, not when the pass began.
        return now + timedelta(seconds=_clock() - started)

    try:
        for item in claimed:
            if at() - now >= LEASE:
                _release(runtime, item, at())
                continue
            error = _post(client, runtime, item, at())
            _settle(runtime, item, error, at(), report)
    finally:
        if own:
            client.close()
    return report


def deliveries(db: Session, *, client_id: str | None = None) -> list[LogoutDelivery]:
    query = select(LogoutDelivery).order_by(LogoutDelivery.id)
    if client_id is not None:
        query = query.where(LogoutDelivery.client_id == client_id)
    return list(db.scalars(query))


async def delivery_loop(runtime: Runtime, stop: asyncio.Event) -> None:
    """Run in every worker (from the app's lifespan): retries come due even when nobody logs out."""
    interval = runtime.settings.logout_retry_base
    while not stop.is_set():
        try:
            await asyncio.to_thread(deliver_due, runtime)
        except Exception:  # a database hiccup must not end the loop for the worker's lifetime
            log.exception("back-channel logout delivery pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
