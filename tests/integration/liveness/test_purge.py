"""`authsvc purge` takes liveness sessions too (both backends): a session whose time ended longer than `keep` ago
goes, whatever its state (a verdict for it now would only be recorded as late), in bounded batches; those still
within `keep`, and open ones, stay."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import event, select

from authsvc import maintenance
from authsvc.audit.models import AuditEvent
from authsvc.cli import prepare
from authsvc.database import unit_of_work, utcnow
from authsvc.liveness.models import LivenessSession, SessionState
from authsvc.runtime import Runtime

KEEP = timedelta(days=30)
HOUR = timedelta(hours=1)


@pytest.fixture
def runtime(settings_factory) -> Iterator[Runtime]:  # type: ignore[no-untyped-def]
    rt = Runtime(settings_factory())
    prepare(rt, migrate=False)
    yield rt
    rt.close()


def _session(runtime: Runtime, *, expires: datetime, state: SessionState = SessionState.OPEN) -> int:
    with unit_of_work(runtime.sessions) as db:
        row = LivenessSession(
            biz_ref=secrets.token_urlsafe(24),
            vendor="sandbox",
            vendor_session_id="LV" + secrets.token_hex(12),
            login_id=secrets.token_urlsafe(24),
            subject=secrets.token_hex(16),
            reference_id="gallery:1",
            state=state,
            created_at=expires - timedelta(minutes=3),
            expires_at=expires,
        )
        db.add(row)
        db.flush()
        return row.id


def _ids(runtime: Runtime) -> set[int]:
    with unit_of_work(runtime.sessions) as db:
        return set(db.scalars(select(LivenessSession.id)))


def _purge(runtime: Runtime, now: datetime, batch: int) -> maintenance.PurgeReport:
    with unit_of_work(runtime.sessions) as db:
        return maintenance.purge(db, now=now, keep=KEEP, batch=batch)


def test_liveness_sessions_go_once_their_time_ended_longer_than_keep_ago(runtime: Runtime) -> None:
    now = utcnow()
    cutoff = now - KEEP
    gone = {_session(runtime, expires=cutoff - HOUR, state=state) for state in SessionState}
    kept = {
        _session(runtime, expires=cutoff + HOUR, state=SessionState.PASSED),
        _session(runtime, expires=now + timedelta(minutes=3)),  # a face check going on now
    }
    deletes: list[int] = []

    @event.listens_for(runtime.engine, "after_cursor_execute")
    def _count(_conn, cursor, statement, _params, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if statement.split()[:3] == ["DELETE", "FROM", "liveness_sessions"]:
            deletes.append(cursor.rowcount)

    report = _purge(runtime, now, batch=2)
    assert report.liveness_sessions == len(gone) == 5
    assert _ids(runtime) == kept
    assert deletes and max(deletes) <= 2 and sum(deletes) == 5  # bounded batches
    assert _purge(runtime, now, batch=2).liveness_sessions == 0
    with unit_of_work(runtime.sessions) as db:
        query = select(AuditEvent.detail).where(AuditEvent.event == maintenance.EVENT).order_by(AuditEvent.id)
        assert [d["liveness_sessions"] for d in db.scalars(query)] == [5, 0]
