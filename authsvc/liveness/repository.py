"""Liveness session queries. Only flushes; the unit of work commits.

The verdict is written by conditional UPDATEs (`claim_open`, `record_late`) before anything is read, so that of two
copies of one verdict delivered at once exactly one changes the row: on PostgreSQL the second waits for the first's
row lock and then finds its condition false; on SQLite the write lock is taken first, so the second never works from
a snapshot the first has changed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from authsvc.liveness.models import LivenessSession, SessionState
from authsvc.registry.models import Cardholder


def add(db: Session, row: LivenessSession) -> None:
    db.add(row)
    db.flush()


def by_vendor_session(db: Session, vendor: str, session_id: str) -> LivenessSession | None:
    query = select(LivenessSession).where(
        LivenessSession.vendor == vendor, LivenessSession.vendor_session_id == session_id
    )
    return db.scalar(query.execution_options(populate_existing=True))


def for_login(db: Session, login_id: str) -> list[LivenessSession]:
    query = select(LivenessSession).where(LivenessSession.login_id == login_id).order_by(LivenessSession.id)
    return list(db.scalars(query))


def serialise_starts(db: Session, subject: str) -> None:
    """Hold the person's registry row until this transaction ends, so that face checks started at once for them
    supersede one another in turn: on PostgreSQL `supersede_open` cannot see a session another start has added but
    not committed yet. (SQLite serialises its writers anyway; FOR UPDATE means nothing there.)"""
    db.execute(select(Cardholder.id).where(Cardholder.subject == subject).with_for_update())


def supersede_open(db: Session, login_id: str, now: datetime) -> None:
    """A new face check for this login: the open ones before it can no longer complete it. Those already past their
    time are recorded as expired (their verdict never came), the others as superseded."""
    for overdue, state in ((True, SessionState.EXPIRED), (False, SessionState.SUPERSEDED)):
        db.execute(
            update(LivenessSession)
            .where(
                LivenessSession.login_id == login_id,
                LivenessSession.state == SessionState.OPEN,
                LivenessSession.expires_at <= now if overdue else LivenessSession.expires_at > now,
            )
            .values(state=state)
            .execution_options(synchronize_session=False)
        )


def claim_open(
    db: Session,
    *,
    vendor: str,
    session_id: str,
    biz_ref: str,
    state: SessionState,
    digest: str,
    live: bool,
    score: float,
    verdict_at: datetime,
    now: datetime,
) -> bool:
    """Record the verdict on the session if it is still open, in time and ours; True if this call did."""
    result = db.execute(
        update(LivenessSession)
        .where(
            LivenessSession.vendor == vendor,
            LivenessSession.vendor_session_id == session_id,
            LivenessSession.biz_ref == biz_ref,
            LivenessSession.state == SessionState.OPEN,
            LivenessSession.expires_at > now,
        )
        .values(
            state=state,
            verdict_digest=digest,
            live=live,
            score=score,
            verdict_at=verdict_at,
            received_at=now,
            late=False,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def record_late(
    db: Session, row: LivenessSession, *, digest: str, live: bool, score: float, verdict_at: datetime, now: datetime
) -> bool:
    """Record a verdict that came after the session's time or after it was superseded, if it has none yet; an open
    session past its time becomes expired. True if this call recorded it."""
    expired = SessionState.EXPIRED if row.state == SessionState.OPEN else row.state
    result = db.execute(
        update(LivenessSession)
        .where(
            LivenessSession.id == row.id,
            LivenessSession.state == row.state,
            LivenessSession.verdict_digest.is_(None),
        )
        .values(
            state=expired,
            verdict_digest=digest,
            live=live,
            score=score,
            verdict_at=verdict_at,
            received_at=now,
            late=True,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]
