"""E-card queries. Only flushes; the unit of work commits."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from authsvc.ecard.models import Ecard, EcardStatus
from authsvc.registry.models import Cardholder

_PUBLIC_ID = re.compile(r"[A-Za-z0-9_-]{16,32}")


def valid_public_id(public_id: str) -> bool:
    return isinstance(public_id, str) and bool(_PUBLIC_ID.fullmatch(public_id))


def by_public_id(session: Session, public_id: str) -> Ecard | None:
    if not valid_public_id(public_id):
        return None
    return session.scalar(select(Ecard).where(Ecard.public_id == public_id))


def by_jkt(session: Session, jkt: str) -> Ecard | None:
    return session.scalar(select(Ecard).where(Ecard.jkt == jkt))


def of_holder(session: Session, cardholder_id: int) -> list[Ecard]:
    query = select(Ecard).where(Ecard.cardholder_id == cardholder_id).order_by(Ecard.created_at, Ecard.id)
    return list(session.scalars(query))


def active_count(session: Session, cardholder_id: int) -> int:
    query = select(func.count(Ecard.id)).where(Ecard.cardholder_id == cardholder_id, Ecard.status == EcardStatus.ACTIVE)
    return int(session.scalar(query) or 0)


def active_of_card(session: Session, card_id: int) -> list[Ecard]:
    query = select(Ecard).where(Ecard.card_id == card_id, Ecard.status == EcardStatus.ACTIVE).with_for_update(of=Ecard)
    return list(session.scalars(query))


def holder_by_subject(session: Session, subject: str) -> Cardholder | None:
    return session.scalar(select(Cardholder).where(Cardholder.subject == subject))


def add(session: Session, row: Ecard) -> None:
    session.add(row)
    session.flush()
