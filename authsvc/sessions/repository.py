"""SSO session queries (flush only; the caller's unit of work commits)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from authsvc.database import lock
from authsvc.sessions.models import SsoSession, SsoSessionClient


def by_sid(db: Session, sid: str, *, lock: bool = False) -> SsoSession | None:
    if not 1 <= len(sid) <= 43:
        return None
    query = select(SsoSession).where(SsoSession.sid == sid)
    if lock:
        query = query.with_for_update()
    return db.scalars(query).one_or_none()


def live_of_subject(db: Session, subject: str, now: datetime) -> list[SsoSession]:
    query = (
        select(SsoSession)
        .where(SsoSession.subject == subject, SsoSession.ended_at.is_(None), SsoSession.expires_at > now)
        .order_by(SsoSession.id)
    )
    return list(db.scalars(query))


def add(db: Session, row: SsoSession) -> SsoSession:
    db.add(row)
    db.flush()
    return row


def client_ids(db: Session, session: SsoSession) -> list[str]:
    query = select(SsoSessionClient.client_id).where(SsoSessionClient.session_id == session.id)
    return list(db.scalars(query.order_by(SsoSessionClient.id)))


def touch_client(db: Session, session: SsoSession, client_id: str, now: datetime) -> None:
    # Two tabs signing in to the same portal at once must not collide on the unique pair.
    lock(db, f"sso-client:{session.id}:{client_id}")
    row = db.scalars(
        select(SsoSessionClient).where(
            SsoSessionClient.session_id == session.id, SsoSessionClient.client_id == client_id
        )
    ).one_or_none()
    if row is None:
        db.add(SsoSessionClient(session_id=session.id, client_id=client_id, first_at=now, last_at=now))
    else:
        row.last_at = now
    db.flush()
