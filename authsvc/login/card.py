"""The card as a browser authenticator (the Web eID model): `sscard helper` on the citizen's computer fetches the
pending login's challenge, has the card sign it with the context of the login page's origin, and posts the card's
answers here. The service computes that context from its own origin (the issuer's), never from what the caller
says, so an answer obtained through another site does not verify. The card proof itself is the kiosk's
(authsvc/kiosk/proof.py): one implementation for both.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy.orm import Session

from authsvc.audit import service as audit
from authsvc.kiosk import proof
from authsvc.kiosk.service import throttle_for
from authsvc.kiosk.throttle import Throttled
from authsvc.kiosk.verification import CardEvidence, Refused
from authsvc.login import pending
from authsvc.runtime import Runtime
from authsvc.tokens import assurance
from card import cryptogram

METHOD = "card"
EVENT = "browser_card_login"


def login_origin(runtime: Runtime) -> str:
    return cryptogram.web_origin(runtime.settings.issuer)


def new_challenge(runtime: Runtime, login: pending.PendingLogin) -> bytes:
    """A fresh challenge for one attempt; it voids any earlier one of this login."""
    challenge = secrets.token_bytes(cryptogram.CHALLENGE_LEN)
    pending.put_challenge(runtime.store, login, METHOD, challenge, runtime.settings.challenge_ttl)
    return challenge


def _audit(
    db: Session,
    outcome: str,
    reason: str | None,
    card_number: str | None,
    login: pending.PendingLogin | None,
    **detail: Any,
) -> None:
    client = {"client_id": login.request.client_id} if login else {}
    audit.record(
        db, event=EVENT, outcome=outcome, reason=reason, card_number=card_number, detail={**client, **detail} or None
    )


def complete(runtime: Runtime, db: Session, login_id: str, evidence: CardEvidence) -> pending.Progress:
    """Verify the card's answer to this login's challenge and count its checks for the login (done, or still
    missing a face check). Raises Refused or Throttled; either way the challenge is spent and the page learns why."""
    store = runtime.store
    throttle = throttle_for(runtime)
    attempt = proof.Attempt()
    login = pending.get(store, login_id)
    try:
        challenge = pending.take_challenge(store, login_id, METHOD)
        if login is None or challenge is None:
            raise Refused("login_unknown", "no such login is waiting for a card (expired or already used)")
        proven = proof.prove(
            runtime,
            db,
            evidence,
            challenge=challenge,
            context=cryptogram.web_context(login_origin(runtime)),
            throttle=throttle,
            attempt=attempt,
        )
        amr = assurance.card_amr(generation=proven.card.generation, pin_verified=proven.read.pin_verified)
        try:
            progress = pending.complete(store, login_id, subject=proven.card.holder.subject, amr=amr, method=METHOD)
        except pending.CompletionRefused as exc:
            raise Refused(exc.reason, exc.detail) from None
    except Refused as exc:
        # A genuine card of the wrong person (step-up) is not the card's failure: it is not counted against it.
        counted = attempt.proven and exc.reason != "subject_mismatch"
        throttle.failure(terminal_id=None, card_number=attempt.card_number if counted else None)
        if login is not None:  # a made-up login id is nobody's attempt: no audit row for anyone to flood
            _audit(db, "failure", exc.reason, attempt.card_number, login)
            pending.fail(store, login, exc.reason)
        raise
    except Throttled as exc:
        _audit(db, "failure", "throttled", attempt.card_number, login)
        if login is not None:
            pending.fail(store, login, "throttled", {"retry_after": exc.retry_after})
        raise
    reached = progress.auth
    _audit(db, "success", None, attempt.card_number, login, acr=reached.acr, generation=proven.card.generation)
    return progress


def abort(runtime: Runtime, db: Session, login_id: str, *, reason: str, tries_left: int | None) -> None:
    """A failure the card saw (wrong PIN, card pulled out, ...), as the helper reports it: spends the challenge,
    audits, tells the page. The card counts its own PIN tries."""
    login = pending.get(runtime.store, login_id)
    if login is None or pending.take_challenge(runtime.store, login_id, METHOD) is None:
        raise Refused("login_unknown", "no such login is waiting for a card (expired or already used)")
    extra = {"tries_left": tries_left} if tries_left is not None else {}
    _audit(db, "failure", reason, None, login, **extra)
    pending.fail(runtime.store, login, reason, extra)
