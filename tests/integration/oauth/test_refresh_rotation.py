"""Refresh-token rotation at the repository level (authsvc.oauth.grants.rotate), on PostgreSQL and SQLite: single use
under concurrency, reuse revokes the grant (committed although the exchange is refused), and every other refusal
leaves the token as it was."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, select

from authsvc.audit.models import AuditEvent
from authsvc.database import unit_of_work, utcnow
from authsvc.oauth import grants
from authsvc.oauth.models import OAuthGrant, RefreshToken
from authsvc.runtime import Runtime
from tests.fixtures.oidc import make_grant, register_client

THREADS = 8


def _grant(runtime: Runtime, client_id: str, *, scope: tuple[str, ...] = ("openid", "profile"), ttl: int = 3600) -> str:
    return make_grant(runtime, client_id, scope=scope, ttl=ttl)[1]


def _grant_row(runtime: Runtime, value: str) -> OAuthGrant:
    with unit_of_work(runtime.sessions) as db:
        token = db.get(RefreshToken, value.split(".")[0])
        assert token is not None
        grant = db.get(OAuthGrant, token.grant_id)
        assert grant is not None
        return grant


def _used(runtime: Runtime, value: str) -> bool:
    with unit_of_work(runtime.sessions) as db:
        token = db.get(RefreshToken, value.split(".")[0])
        assert token is not None
        return token.used_at is not None


def _reuse_events(runtime: Runtime) -> int:
    with unit_of_work(runtime.sessions) as db:
        return db.scalar(select(func.count()).where(AuditEvent.event == "refresh_token_reused")) or 0


def test_rotation_returns_the_grant_and_a_successor(runtime: Runtime) -> None:
    rc = register_client(runtime)
    value = _grant(runtime, rc.client_id)
    outcome = grants.rotate(runtime, value, client_id=rc.client_id)
    assert isinstance(outcome, grants.Rotated), outcome
    assert outcome.grant.client_id == rc.client_id and outcome.grant.scope == "openid profile"
    assert outcome.grant.amr == ["sc", "pin"] and outcome.grant.sid == "sid-1"
    assert outcome.grant.auth_time.tzinfo is not None
    assert _used(runtime, value) and not _used(runtime, outcome.refresh_token)
    # The successor never outlives the grant.
    with unit_of_work(runtime.sessions) as db:
        successor = db.get(RefreshToken, outcome.refresh_token.split(".")[0])
        assert successor is not None and successor.expires_at <= outcome.grant.expires_at
    assert isinstance(grants.rotate(runtime, outcome.refresh_token, client_id=rc.client_id), grants.Rotated)


def test_concurrent_exchanges_of_one_token_have_one_winner_and_revoke_the_grant(runtime: Runtime) -> None:
    rc = register_client(runtime)
    value = _grant(runtime, rc.client_id)
    start = threading.Barrier(THREADS)
    outcomes: list[grants.Rotated | grants.Refused | BaseException] = []

    def exchange() -> None:
        start.wait()
        try:
            outcomes.append(grants.rotate(runtime, value, client_id=rc.client_id))
        except BaseException as exc:  # surfaced by the assertions below
            outcomes.append(exc)

    threads = [threading.Thread(target=exchange) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if isinstance(o, grants.Rotated)]
    losers = [o for o in outcomes if isinstance(o, grants.Refused)]
    assert len(winners) == 1 and len(losers) == THREADS - 1, outcomes
    assert all("already used" in o.description for o in losers)
    # Every loser was a reuse: the grant is revoked (once), the winner's successor is worthless.
    grant = _grant_row(runtime, value)
    assert grant.revoked_at is not None and grant.revoked_reason == "refresh_token_reused"
    assert grants.is_revoked(runtime.store, grant.id)
    assert _reuse_events(runtime) == 1
    assert isinstance(grants.rotate(runtime, winners[0].refresh_token, client_id=rc.client_id), grants.Refused)


def test_reuse_revokes_the_grant_even_when_the_reuse_asks_for_more_scope(runtime: Runtime) -> None:
    rc = register_client(runtime)
    value = _grant(runtime, rc.client_id, scope=("openid",))
    rotated = grants.rotate(runtime, value, client_id=rc.client_id)
    assert isinstance(rotated, grants.Rotated)
    reuse = grants.rotate(runtime, value, client_id=rc.client_id, scope=["openid", "profile"])
    assert isinstance(reuse, grants.Refused) and reuse.error == "invalid_grant"
    assert _grant_row(runtime, value).revoked_at is not None
    assert isinstance(grants.rotate(runtime, rotated.refresh_token, client_id=rc.client_id), grants.Refused)


def test_refusals_before_the_exchange_leave_the_token_unspent(runtime: Runtime) -> None:
    rc, other = register_client(runtime), register_client(runtime)
    value = _grant(runtime, rc.client_id, scope=("openid",))
    token_id = value.split(".")[0]
    forged = f"{token_id}.{'A' * 43}"
    assert grants.rotate(runtime, forged, client_id=rc.client_id) == grants.Refused("unknown refresh token")
    assert grants.rotate(runtime, value, client_id=other.client_id) == grants.Refused("unknown refresh token")
    wider = grants.rotate(runtime, value, client_id=rc.client_id, scope=["openid", "profile"])
    assert isinstance(wider, grants.Refused) and wider.error == "invalid_scope"
    for malformed in ("", "x", token_id, value + "x", value.upper()):
        assert isinstance(grants.rotate(runtime, malformed, client_id=rc.client_id), grants.Refused)
    assert not _used(runtime, value)
    # A forged secret for a spent token is no reuse either: only the holder of the real token can revoke.
    assert isinstance(grants.rotate(runtime, value, client_id=rc.client_id), grants.Rotated)
    assert isinstance(grants.rotate(runtime, forged, client_id=rc.client_id), grants.Refused)
    assert isinstance(grants.rotate(runtime, value, client_id=other.client_id), grants.Refused)
    assert _grant_row(runtime, value).revoked_at is None


def test_expired_or_revoked_grant_refuses_without_spending(runtime: Runtime) -> None:
    rc = register_client(runtime)
    value = _grant(runtime, rc.client_id, ttl=600)
    later = utcnow() + timedelta(seconds=601)
    expired = grants.rotate(runtime, value, client_id=rc.client_id, now=later)
    assert isinstance(expired, grants.Refused) and "expired" in expired.description
    assert not _used(runtime, value)
    with unit_of_work(runtime.sessions) as db:
        grant = db.get(OAuthGrant, _grant_row(runtime, value).id)
        assert grant is not None and grants.revoke(db, runtime, grant, "session_ended")
    revoked = grants.rotate(runtime, value, client_id=rc.client_id)
    assert isinstance(revoked, grants.Refused) and "revoked" in revoked.description
    assert not _used(runtime, value) and _reuse_events(runtime) == 0
