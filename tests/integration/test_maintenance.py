"""Housekeeping (`authsvc purge`, authsvc.maintenance) on PostgreSQL and SQLite: each kind of row goes only once it
has been dead longer than `keep`, nothing live is touched, spent refresh tokens of live grants stay for reuse
detection, every statement is bounded by the batch, and the command prints its counts."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select

from authsvc import maintenance
from authsvc.audit.models import AuditEvent
from authsvc.cli import main, prepare
from authsvc.database import unit_of_work, utcnow
from authsvc.oauth import grants
from authsvc.oauth.models import OAuthGrant, RefreshToken
from authsvc.oidc import backchannel
from authsvc.runtime import Runtime
from authsvc.sessions.models import DeliveryStatus, LogoutDelivery, SsoSession, SsoSessionClient
from tests.fixtures.oidc import make_grant, register_client

KEEP = timedelta(days=30)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
OK_URI = "http://portal.test/ok"
DOWN_URI = "http://portal.test/down"


@pytest.fixture
def runtime(settings_factory) -> Iterator[Runtime]:  # type: ignore[no-untyped-def]
    # One failed attempt gives a delivery up; the delivery loop never runs during a test (passes are explicit).
    rt = Runtime(settings_factory(logout_max_attempts=1, logout_retry_base=3600))
    prepare(rt, migrate=False)
    yield rt
    rt.close()


# --- rows as the service makes them, at chosen times ---


def _session(runtime: Runtime, *, created: datetime, expires: datetime, ended: datetime | None = None) -> int:
    with unit_of_work(runtime.sessions) as db:
        row = SsoSession(
            sid=secrets.token_urlsafe(24),
            cookie_digest="unused",
            subject="subject-1",
            acr="urn:sscard:acr:substantial",
            amr=["sc", "pin"],
            auth_time=created,
            created_at=created,
            expires_at=expires,
            ended_at=ended,
        )
        db.add(row)
        db.flush()
        for client_id in ("portal-a", "portal-b"):
            db.add(SsoSessionClient(session_id=row.id, client_id=client_id, first_at=created, last_at=created))
        return row.id


def _grant(runtime: Runtime, client_id: str, *, created: datetime, ttl: timedelta) -> tuple[str, str]:
    """A grant and its first refresh token, issued at `created`."""
    return make_grant(runtime, client_id, scope=("openid",), ttl=int(ttl.total_seconds()), created=created)


def _rotate(runtime: Runtime, value: str, client_id: str, at: datetime) -> str:
    rotated = grants.rotate(runtime, value, client_id=client_id, now=at)
    assert isinstance(rotated, grants.Rotated), rotated
    return rotated.refresh_token


def _revoke(runtime: Runtime, grant_id: str, at: datetime) -> None:
    with unit_of_work(runtime.sessions) as db:
        grant = db.get(OAuthGrant, grant_id)
        assert grant is not None and grants.revoke(db, runtime, grant, "test", now=at)


def _portal(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200 if str(request.url) == OK_URI else 500)


def _delivery(runtime: Runtime, *, uri: str, settled: datetime | None) -> int:
    """A logout delivery attempted once at `settled` (delivered to OK_URI, given up at DOWN_URI), or, without
    `settled`, one still pending that has waited long (a portal down and no worker running since)."""
    due = (settled or utcnow() - 90 * DAY) - timedelta(seconds=1)
    with unit_of_work(runtime.sessions) as db:
        row = LogoutDelivery(
            client_id="portal-a",
            uri=uri,
            claims={"aud": "portal-a", "sub": "s", "sid": "sid-1", "jti": secrets.token_urlsafe(16)},
            status=DeliveryStatus.PENDING,
            attempts=0,
            next_attempt_at=due,
            created_at=due,
        )
        db.add(row)
        db.flush()
        row_id = row.id
    if settled is not None:
        with httpx.Client(transport=httpx.MockTransport(_portal)) as http:
            report = backchannel.deliver_due(runtime, http=http, now=settled)
        assert (report.delivered, report.failed) == ((1, 0) if uri == OK_URI else (0, 1))
    return row_id


def _ids(runtime: Runtime, column: Any) -> set[Any]:
    with unit_of_work(runtime.sessions) as db:
        return set(db.scalars(select(column)))


def _purge_events(runtime: Runtime) -> list[dict[str, Any]]:
    with unit_of_work(runtime.sessions) as db:
        query = select(AuditEvent.detail).where(AuditEvent.event == maintenance.EVENT).order_by(AuditEvent.id)
        return list(db.scalars(query))


def _purge(runtime: Runtime, *, now: datetime, keep: timedelta = KEEP, batch: int = 1000) -> maintenance.PurgeReport:
    with unit_of_work(runtime.sessions) as db:
        return maintenance.purge(db, now=now, keep=keep, batch=batch)


def _counting_deletes(runtime: Runtime) -> list[tuple[str, int]]:
    """(table, rows deleted) of every DELETE the engine runs from now on."""
    seen: list[tuple[str, int]] = []

    @event.listens_for(runtime.engine, "after_cursor_execute")
    def _after(_conn, cursor, statement, _params, _context, _many) -> None:  # type: ignore[no-untyped-def]
        words = statement.split()
        if words[:2] == ["DELETE", "FROM"]:
            seen.append((words[2], cursor.rowcount))

    return seen


# --- the tests ---


def test_each_kind_goes_only_once_dead_longer_than_keep_in_bounded_batches(runtime: Runtime) -> None:
    now = utcnow()
    cutoff = now - KEEP
    client_id = register_client(runtime).client_id

    # Sessions: ended before the cutoff (but expiring after it), expired before it; then ended or expired after the
    # cutoff, and live. Three of each purged kind, so that batches of two need several rounds.
    gone_sessions = {
        *(_session(runtime, created=cutoff - 2 * HOUR, expires=cutoff + 6 * HOUR, ended=cutoff - HOUR) for _ in "123"),
        *(_session(runtime, created=cutoff - 9 * HOUR, expires=cutoff - HOUR) for _ in "123"),
    }
    kept_sessions = {
        _session(runtime, created=cutoff - HOUR, expires=cutoff + 7 * HOUR, ended=cutoff + HOUR),
        _session(runtime, created=cutoff - 7 * HOUR, expires=cutoff + HOUR),
        _session(runtime, created=now - HOUR, expires=now + 7 * HOUR),
    }

    # Grants: revoked before the cutoff with a chain of three tokens (two spent), expired before it; revoked or
    # expired after the cutoff; live. Each kept grant has a token that must stay with it.
    revoked_old, first = _grant(runtime, client_id, created=cutoff - 2 * DAY, ttl=90 * DAY)
    second = _rotate(runtime, first, client_id, cutoff - 2 * DAY + HOUR)
    _rotate(runtime, second, client_id, cutoff - 2 * DAY + 2 * HOUR)
    _revoke(runtime, revoked_old, cutoff - HOUR)
    expired_old = [_grant(runtime, client_id, created=cutoff - 8 * DAY, ttl=7 * DAY)[0] for _ in "123"]
    revoked_recent, _ = _grant(runtime, client_id, created=cutoff - 2 * DAY, ttl=90 * DAY)
    _revoke(runtime, revoked_recent, cutoff + HOUR)
    expired_recent, _ = _grant(runtime, client_id, created=cutoff - 7 * DAY + HOUR, ttl=7 * DAY)
    live, _ = _grant(runtime, client_id, created=now - HOUR, ttl=7 * DAY)
    kept_grants = {revoked_recent, expired_recent, live}
    with unit_of_work(runtime.sessions) as db:
        kept_tokens = set(db.scalars(select(RefreshToken.id).where(RefreshToken.grant_id.in_(kept_grants))))
    assert len(kept_tokens) == 3

    # Deliveries: delivered or given up before the cutoff; after it; and one still pending from long ago.
    gone_deliveries = {
        *(_delivery(runtime, uri=OK_URI, settled=cutoff - HOUR) for _ in "12"),
        _delivery(runtime, uri=DOWN_URI, settled=cutoff - HOUR),
    }
    kept_deliveries = {
        _delivery(runtime, uri=OK_URI, settled=cutoff + HOUR),
        _delivery(runtime, uri=DOWN_URI, settled=cutoff + HOUR),
        _delivery(runtime, uri=DOWN_URI, settled=None),
    }

    deletes = _counting_deletes(runtime)
    report = _purge(runtime, now=now, batch=2)

    assert report.counts() == {
        "sessions": 6,
        "session_clients": 12,
        "grants": 4,
        "refresh_tokens": 3 + 3,
        "logout_deliveries": 3,
        "liveness_sessions": 0,
    }
    assert _ids(runtime, SsoSession.id) == kept_sessions and len(gone_sessions) == 6
    assert _ids(runtime, SsoSessionClient.session_id) == kept_sessions
    assert _ids(runtime, OAuthGrant.id) == kept_grants and len({revoked_old, *expired_old}) == 4
    assert _ids(runtime, RefreshToken.id) == kept_tokens
    assert _ids(runtime, LogoutDelivery.id) == kept_deliveries and len(gone_deliveries) == 3
    with unit_of_work(runtime.sessions) as db:
        assert db.scalar(select(LogoutDelivery.status).where(LogoutDelivery.attempts == 0)) == DeliveryStatus.PENDING

    # Bounded: no statement deleted more than a batch, so each kind took several statements.
    assert deletes and max(rows for _, rows in deletes) <= 2
    per_table = {table: sum(1 for t, _ in deletes if t == table) for table, _ in deletes}
    assert all(per_table[t] >= 3 for t in ("sso_sessions", "sso_session_clients", "oauth_grants", "refresh_tokens"))
    assert sum(rows for _, rows in deletes) == sum(report.counts().values())

    # One audit event per run, with the counts; a second run finds nothing left to do.
    assert _purge(runtime, now=now, batch=2).counts() == dict.fromkeys(report.counts(), 0)
    events = _purge_events(runtime)
    assert len(events) == 2
    assert {k: events[0][k] for k in report.counts()} == report.counts()
    assert events[0]["cutoff"] == cutoff.isoformat() and events[0]["batch"] == 2


def test_a_spent_refresh_token_of_a_live_grant_stays_and_its_reuse_still_revokes_the_grant(runtime: Runtime) -> None:
    now = utcnow()
    client_id = register_client(runtime).client_id
    # A long grant, refreshed long ago: its spent tokens (and an unspent one that expired) are all older than the
    # cutoff, but the grant is live, so reuse detection needs them.
    grant_id, first = _grant(runtime, client_id, created=now - 60 * DAY, ttl=90 * DAY)
    second = _rotate(runtime, first, client_id, now - 59 * DAY)
    _rotate(runtime, second, client_id, now - 55 * DAY)
    tokens = _ids(runtime, RefreshToken.id)
    assert len(tokens) == 3

    # Even with nothing kept, a live grant's tokens stay.
    assert _purge(runtime, now=now, keep=timedelta(0)).counts() == dict.fromkeys(maintenance.PurgeReport().counts(), 0)
    assert _ids(runtime, RefreshToken.id) == tokens and _ids(runtime, OAuthGrant.id) == {grant_id}

    reuse = grants.rotate(runtime, first, client_id=client_id, now=now)
    assert isinstance(reuse, grants.Refused) and "already used" in reuse.description
    with unit_of_work(runtime.sessions) as db:
        grant = db.get(OAuthGrant, grant_id)
        assert grant is not None and grant.revoked_reason == "refresh_token_reused"
        assert db.scalar(select(func.count()).where(AuditEvent.event == "refresh_token_reused")) == 1
    assert grants.is_revoked(runtime.store, grant_id)

    # Revoked now, the grant and its chain go once the revocation is older than keep, not before.
    assert _purge(runtime, now=now + KEEP - HOUR).grants == 0
    later = _purge(runtime, now=now + KEEP + HOUR, batch=2)
    assert (later.grants, later.refresh_tokens) == (1, 3)
    assert not _ids(runtime, RefreshToken.id) and not _ids(runtime, OAuthGrant.id)


def test_nothing_live_is_touched_even_when_nothing_dead_is_kept(runtime: Runtime) -> None:
    now = utcnow()
    client_id = register_client(runtime).client_id
    session = _session(runtime, created=now - 7 * HOUR, expires=now + HOUR)
    grant_id, _ = _grant(runtime, client_id, created=now - 6 * DAY, ttl=7 * DAY)
    pending = _delivery(runtime, uri=DOWN_URI, settled=None)
    just_expired = _session(runtime, created=now - 9 * HOUR, expires=now - timedelta(seconds=1))

    report = _purge(runtime, now=now, keep=timedelta(0), batch=1)
    assert (report.sessions, report.session_clients, report.grants, report.logout_deliveries) == (1, 2, 0, 0)
    assert _ids(runtime, SsoSession.id) == {session} and just_expired not in _ids(runtime, SsoSessionClient.session_id)
    assert _ids(runtime, OAuthGrant.id) == {grant_id} and len(_ids(runtime, RefreshToken.id)) == 1
    assert _ids(runtime, LogoutDelivery.id) == {pending}


def test_purge_refuses_arguments_that_would_reach_live_rows(runtime: Runtime) -> None:
    now = utcnow()
    with unit_of_work(runtime.sessions) as db:
        with pytest.raises(ValueError, match="negative"):
            maintenance.purge(db, now=now, keep=-DAY, batch=10)
        with pytest.raises(ValueError, match="batch"):
            maintenance.purge(db, now=now, keep=KEEP, batch=0)
        with pytest.raises(ValueError, match="timezone"):
            maintenance.purge(db, now=now.replace(tzinfo=None), keep=KEEP, batch=10)
    assert _purge_events(runtime) == []


def test_the_command_prints_the_counts_as_json(cli_env: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    now = utcnow()
    client_id = register_client(cli_env).client_id
    for _ in "12":
        _session(cli_env, created=now - 40 * DAY, expires=now - 40 * DAY + 8 * HOUR)
    _grant(cli_env, client_id, created=now - 60 * DAY, ttl=7 * DAY)
    live = _session(cli_env, created=now, expires=now + 8 * HOUR)

    assert main(["purge", "--keep-days", "45"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "sessions": 0,
        "session_clients": 0,
        "grants": 1,
        "refresh_tokens": 1,
        "logout_deliveries": 0,
        "liveness_sessions": 0,
    }
    assert main(["purge", "--batch", "1"]) == 0  # the default keep, 30 days
    assert json.loads(capsys.readouterr().out) == {
        "sessions": 2,
        "session_clients": 4,
        "grants": 0,
        "refresh_tokens": 0,
        "logout_deliveries": 0,
        "liveness_sessions": 0,
    }
    assert _ids(cli_env, SsoSession.id) == {live}
    assert len(_purge_events(cli_env)) == 2

    for bad in (["--keep-days", "-1"], ["--batch", "0"], ["--keep-days", "x"]):
        with pytest.raises(SystemExit) as exit_:
            main(["purge", *bad])
        assert exit_.value.code == 2 and "purge" in capsys.readouterr().err
