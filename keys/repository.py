"""Queries over stored key material. Only flushes; the caller's unit of work commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from keys.models import KeyRecord, KeyState


def by_purpose(session: Session, purpose: str, *, label: str | None = None, lock: bool = False) -> Sequence[KeyRecord]:
    query = select(KeyRecord).where(KeyRecord.purpose == purpose).order_by(KeyRecord.created_at)
    if label is not None:
        query = query.where(KeyRecord.label == label)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).all()


def active(session: Session, purpose: str, *, label: str | None = None) -> KeyRecord | None:
    for record in by_purpose(session, purpose, label=label):
        if record.state == KeyState.ACTIVE:
            return record
    return None


def get(session: Session, kid: str) -> KeyRecord | None:
    return session.get(KeyRecord, kid)


def add(session: Session, record: KeyRecord) -> KeyRecord:
    session.add(record)
    session.flush()
    return record
