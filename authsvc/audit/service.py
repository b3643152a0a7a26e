"""Recording audit events in the caller's unit of work: an outcome and its audit event commit together.

Routes answer a refusal by returning a problem (not raising), so the unit of work still commits the audit event
of a refused attempt.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from authsvc.audit.models import AuditEvent
from authsvc.registry.masking import mask_card_number

log = logging.getLogger("sscard.audit")


def record(
    session: Session,
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
