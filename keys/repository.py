"""Queries over stored key material. Only flushes; the caller's unit of work commits."""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from authsvc.database import lock, utcnow
from keys.models import KeyRecord, KeyState
from keys.sealing import Sealer


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


def ensure_secret(
    session: Session, sealer: Sealer, *, purpose: str, label: str, algorithm: str, kid_prefix: str, size: int
) -> KeyRecord:
    """The active symmetric key of (purpose, label), made on first use: `size` random bytes, sealed. The advisory
    lock makes first use by two workers at once create one key, not two."""
    lock(session, f"keys:{purpose}:{label}")
    record = active(session, purpose, label=label)
    if record is not None:
        return record
    now = utcnow()
    return add(
        session,
        KeyRecord(
            kid=f"{kid_prefix}-{secrets.token_hex(4)}",
            purpose=purpose,
            algorithm=algorithm,
            state=KeyState.ACTIVE,
            label=label,
            public_pem=None,
            certificate_pem=None,
            sealed_secret=sealer.seal(os.urandom(size)),
            created_at=now,
            activated_at=now,
        ),
    )
