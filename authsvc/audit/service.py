"""Recording audit events in their own transaction, so that a refused request's rollback keeps its trace."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from authsvc.audit.models import AuditEvent
from authsvc.database import unit_of_work
from authsvc.registry.masking import mask_card_number

log = logging.getLogger("sscard.audit")


def record(
    factory: sessionmaker[Session],
    *,
    event: str,
    outcome: str,
    reason: str | None = None,
    terminal_id: str | None = None,
    card_number: str | None = None,
    subject: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    card = mask_card_number(card_number) if card_number else None
    with unit_of_work(factory) as session:
        session.add(
            AuditEvent(
                event=event,
                outcome=outcome,
                reason=reason,
                terminal_id=terminal_id,
                card=card,
                subject=subject,
                detail=detail,
            )
        )
    log.info("%s %s reason=%s terminal=%s card=%s", event, outcome, reason, terminal_id, card)
