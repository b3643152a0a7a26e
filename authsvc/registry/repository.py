"""Registry queries. Only flushes; the unit of work commits."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from authsvc.registry.models import Card, Cardholder, CardStatus, Terminal


def holder_by_ssn(session: Session, ssn: str) -> Cardholder | None:
    return session.scalar(select(Cardholder).where(Cardholder.ssn == ssn))


def card_by_number(session: Session, card_number: str) -> Card | None:
    return session.scalar(select(Card).where(Card.card_number == card_number))


def live_cards(session: Session, holder_id: int) -> list[Card]:
    """Cards that still stand for the holder (a new card is issued only once these are cancelled or lost)."""
    query = select(Card).where(Card.cardholder_id == holder_id, Card.status.in_([CardStatus.ACTIVE, CardStatus.FROZEN]))
    return list(session.scalars(query))


def number_taken(session: Session, card_number: str, identification_code: str) -> bool:
    query = select(Card.id).where((Card.card_number == card_number) | (Card.identification_code == identification_code))
    return session.scalar(query) is not None


def terminal(session: Session, terminal_id: str) -> Terminal | None:
    return session.get(Terminal, terminal_id)


def add(session: Session, row: Cardholder | Card | Terminal) -> None:
    session.add(row)
    session.flush()
