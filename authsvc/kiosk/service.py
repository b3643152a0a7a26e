"""Kiosk login use cases: start (a challenge), complete (verify the card, issue tokens), abort (audit a failure)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from authsvc.audit import service as audit
from authsvc.kiosk import challenges, proof
from authsvc.kiosk.challenges import PendingLogin
from authsvc.kiosk.throttle import Throttle, Throttled
from authsvc.kiosk.verification import CardEvidence, Refused
from authsvc.registry.masking import mask_card_number, mask_name, mask_ssn
from authsvc.registry.models import Card, Terminal
from authsvc.runtime import Runtime
from authsvc.tokens import assurance, issuing
from card import cryptogram

EVENT = "kiosk_card_login"


def throttle_for(runtime: Runtime) -> Throttle:
    s = runtime.settings
    return Throttle(runtime.store, s.throttle_window, s.throttle_card_failures, s.throttle_terminal_failures)


def start_login(runtime: Runtime, session: Session, terminal: Terminal) -> PendingLogin:
    try:
        throttle_for(runtime).check_terminal(terminal.id)
    except Throttled:
        _failed(session, terminal, "throttled", None)
        raise
    return challenges.start(runtime.store, terminal.id, runtime.settings.challenge_ttl)


@dataclass(frozen=True)
class LoginResult:
    tokens: issuing.TokenSet
    auth: issuing.Authentication
    card: Card


def _failed(
    session: Session, terminal: Terminal, reason: str, card_number: str | None, detail: dict[str, Any] | None = None
) -> None:
    audit.record(
        session,
        event=EVENT,
        outcome="failure",
        reason=reason,
        terminal_id=terminal.id,
        card_number=card_number,
        detail=detail,
    )


def complete_login(
    runtime: Runtime, session: Session, terminal: Terminal, login_id: str, evidence: CardEvidence
) -> LoginResult:
    throttle = throttle_for(runtime)
    attempt = proof.Attempt()
    try:
        # Checked here as well as at start: a kiosk could collect challenges first and spend them later.
        throttle.check_terminal(terminal.id)
        pending = challenges.take(runtime.store, terminal.id, login_id)
        if pending is None:
            raise Refused("login_unknown", "no such login is pending for this terminal (expired or already used)")
        proven = proof.prove(
            runtime,
            session,
            evidence,
            challenge=pending.challenge,
            context=cryptogram.kiosk_context(terminal.id),
            throttle=throttle,
            attempt=attempt,
        )
    except Refused as exc:
        throttle.failure(terminal_id=terminal.id, card_number=attempt.card_number if attempt.proven else None)
        _failed(session, terminal, exc.reason, attempt.card_number)
        raise
    except Throttled:
        _failed(session, terminal, "throttled", attempt.card_number)
        raise
    card, read, card_number = proven.card, proven.read, attempt.card_number
    acr, amr = assurance.card_login(generation=card.generation, pin_verified=read.pin_verified)
    auth = issuing.Authentication(subject=card.holder.subject, auth_time=int(time.time()), acr=acr, amr=amr)
    s = runtime.settings
    tokens = issuing.issue(
        runtime.keyring,
        issuer=s.issuer,
        client_id=terminal.id,
        audience=s.access_token_audience,
        auth=auth,
        id_ttl=s.id_token_ttl,
        access_ttl=s.access_token_ttl,
        # The kiosk's citizen may pay contributions from the card's financial account (payments/orders/checkout.py),
        # which also requires the card + PIN level this login may have reached.
        scope="openid payments",
    )
    audit.record(
        session,
        event=EVENT,
        outcome="success",
        terminal_id=terminal.id,
        card_number=card_number,
        subject=auth.subject,
        detail={"acr": acr, "generation": card.generation},
    )
    return LoginResult(tokens, auth, card)


def identity(result: LoginResult) -> dict[str, Any]:
    holder = result.card.holder
    return {
        "subject": result.auth.subject,
        "name": mask_name(holder.name),
        "ssn": mask_ssn(holder.ssn),
        "card_number": mask_card_number(result.card.card_number),
        "generation": result.card.generation,
    }


def abort_login(
    runtime: Runtime,
    session: Session,
    terminal: Terminal,
    login_id: str,
    *,
    reason: str,
    tries_left: int | None,
    card_number: str | None,
) -> None:
    """Record a failure the card saw. `card_number` is the kiosk's word, unproven: audited, never counted against
    the card (else any kiosk could lock any citizen out); the card counts its own PIN tries."""
    pending = challenges.take(runtime.store, terminal.id, login_id)
    if pending is None:
        raise Refused("login_unknown", "no such login is pending for this terminal (expired or already used)")
    if reason in ("pin_wrong", "pin_blocked"):
        throttle_for(runtime).failure(terminal_id=terminal.id, card_number=None)
    _failed(session, terminal, reason, card_number, {"tries_left": tries_left} if tries_left is not None else None)
