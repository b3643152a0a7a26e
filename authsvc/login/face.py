"""The face as a login method (实人): a liveness vendor compares the citizen's live face with the reference photo of
the person an earlier factor of this login identified (a card, an e-card, or the step-up session's person).

`start` opens a session at the vendor for a pending login and returns the capture URL the citizen's phone opens (the
login page shows it as a QR code; the e-card app opens it directly). The vendor's verdict arrives later at
authsvc/liveness/endpoints.py; authsvc/liveness/verdicts.py records it and calls `verdict_arrived`, which completes
the login with `face` or tells the page why it failed. `state` is what the page shows meanwhile; a verdict that
never comes times out after SSCARD_LIVENESS_SESSION_TTL and the page may start again.

One face check per login at a time, in the shared store (written and read on its own, like pending.py's keys):
  pending:face:<login id>          {"biz_ref", "expires_at", "state": waiting | passed | failed, "reason"?}
  pending:face-starts:<login id>   how many were started (each costs a vendor session): at most MAX_STARTS
A new start supersedes the one before (its session row too, so its verdict completes nothing).
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from authsvc.audit import service as audit
from authsvc.liveness import repository
from authsvc.liveness.models import LivenessSession
from authsvc.liveness.setup import callback_url
from authsvc.liveness.vendor import SessionRequest, VendorDeclined, VendorUnavailable
from authsvc.login import pending
from authsvc.registry.masking import mask_photo_ref
from authsvc.registry.models import Cardholder
from authsvc.runtime import Runtime
from authsvc.tokens import assurance

METHOD = assurance.METHOD_FACE
# Each start opens a session at the vendor (which bills it): a login may start a few, not a flood.
MAX_STARTS = 5
EVENT_STARTED = "face_check_started"
log = logging.getLogger("sscard.liveness")


@dataclass(frozen=True)
class FaceStart:
    capture_url: str
    session_id: str  # the vendor's
    expires_in: int


class FaceRefused(Exception):
    """Why a face check cannot start; `status` is the HTTP status the browser route answers with."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


def _key(login_id: str) -> str:
    return f"pending:face:{login_id}"


def available(runtime: Runtime) -> bool:
    """Whether this deployment can run a face check at all (a vendor configured, with its keys)."""
    return runtime.liveness.available()


def start(runtime: Runtime, db: Session, login: pending.PendingLogin) -> FaceStart:
    """Open a liveness session for this login at the vendor (no HTTP of ours in here: the browser route and the
    e-card flow both call it). Raises FaceRefused."""
    liveness, settings = runtime.liveness, runtime.settings
    if not settings.liveness_vendor:
        raise FaceRefused(409, "face_unavailable", "this service offers no face check")
    subject = pending.subject_of(runtime.store, login)
    if subject is None:
        raise FaceRefused(409, "subject_unknown", "sign in with the card or the e-card first: the face is compared "
                          "with the photo of the person they identify")  # fmt: skip
    # Each start is a session the vendor bills: none for a login that is done or has its face already.
    progress = pending.status(runtime.store, login)
    if progress["status"] == "done" or METHOD not in progress["missing"]:
        raise FaceRefused(409, "method_not_offered", "this sign-in does not need a face check (any more)")
    photo_ref = db.scalar(select(Cardholder.photo_ref).where(Cardholder.subject == subject))
    if not photo_ref:
        raise FaceRefused(409, "no_reference_photo", "there is no reference photo on file for this person")
    now = liveness.clock()
    expires_in = min(settings.liveness_session_ttl, login.seconds_left(now))
    if expires_in < 1:
        raise FaceRefused(404, "login_unknown", "this sign-in has expired")
    if runtime.store.count(f"pending:face-starts:{login.login_id}", max(1, login.seconds_left())) > MAX_STARTS:
        raise FaceRefused(429, "too_many_attempts", f"at most {MAX_STARTS} face checks per sign-in; start again")
    biz_ref = secrets.token_urlsafe(24)
    request = SessionRequest(biz_ref, photo_ref, callback_url(settings), expires_in)
    try:
        opened = liveness.vendor().open_session(request)
    except VendorUnavailable as exc:
        log.error("face check for login not started: %s", exc)
        raise FaceRefused(503, "face_unavailable", "the face check service is not available; try again") from None
    except VendorDeclined as exc:
        # The vendor's message says why (our request's signature, its clock, ...); it may name the photo's id,
        # which logs only ever show masked.
        masked = mask_photo_ref(photo_ref)
        said = exc.message.replace(photo_ref, masked)
        log.error("face check refused by the vendor: %s %r (reference %s)", exc.code, said, masked)
        if exc.code == "REFERENCE_UNKNOWN":  # the person's photo is not in the vendor's gallery
            raise FaceRefused(409, "face_refused", "the face check service cannot check this person") from None
        # Anything else is our request or our account at the vendor: nothing the citizen can change.
        raise FaceRefused(503, "face_unavailable", "the face check service is not available; try again") from None
    if repository.by_vendor_session(db, liveness.name, opened.session_id) is not None:
        # Verdicts name the vendor's session: one it gave out before would be another login's, so this answer is
        # unusable (and recording it would break the unique session id).
        log.error("face check for login not started: the vendor answered a session id it had given before")
        raise FaceRefused(503, "face_unavailable", "the face check service is not available; try again")
    expires_at = int(now) + opened.expires_in
    repository.serialise_starts(db, subject)  # a second start at once waits here for this one's commit
    repository.supersede_open(db, login.login_id, datetime.fromtimestamp(now, UTC))
    repository.add(
        db,
        LivenessSession(
            biz_ref=biz_ref,
            vendor=liveness.name,
            vendor_session_id=opened.session_id,
            login_id=login.login_id,
            subject=subject,
            reference_id=photo_ref,
            created_at=datetime.fromtimestamp(now, UTC),
            expires_at=datetime.fromtimestamp(expires_at, UTC),
        ),
    )
    _put(runtime, login, {"biz_ref": biz_ref, "expires_at": expires_at, "state": "waiting"})
    audit.record(
        db,
        event=EVENT_STARTED,
        outcome="success",
        subject=subject,
        detail={"client_id": login.request.client_id, "vendor": liveness.name, "reference": mask_photo_ref(photo_ref)},
    )
    return FaceStart(opened.capture_url, opened.session_id, opened.expires_in)


def _put(runtime: Runtime, login: pending.PendingLogin, doc: dict[str, Any]) -> None:
    runtime.store.put(_key(login.login_id), json.dumps(doc).encode(), max(1, login.seconds_left()))


def _current(runtime: Runtime, login_id: str) -> dict[str, Any] | None:
    raw = runtime.store.get(_key(login_id))
    return None if raw is None else json.loads(raw)


def state(runtime: Runtime, login: pending.PendingLogin) -> dict[str, Any] | None:
    """The face check of this login as the page shows it (the status route merges it under "face"); None when none
    was started. `timed_out`: the verdict did not come in time; the page may start again."""
    doc = _current(runtime, login.login_id)
    if doc is None:
        return None
    # Rounded up: in a session's last second a verdict still counts (verdicts.py), so the page still waits.
    left = max(0, math.ceil(doc["expires_at"] - runtime.liveness.clock()))
    shown = doc["state"]
    if shown == "waiting" and left == 0:
        shown = "timed_out"
    answer: dict[str, Any] = {"state": shown, "expires_in": left if shown == "waiting" else 0}
    if "reason" in doc:
        answer["reason"] = doc["reason"]
    return answer


@dataclass(frozen=True)
class LoginOutcome:
    reason: str | None  # None: the login got `face` (done or not); else why it did not
    done: bool = False


def verdict_arrived(runtime: Runtime, row: LivenessSession, *, passed: bool, reason: str | None) -> LoginOutcome:
    """A verdict in time for the login's current face check (authsvc/liveness/verdicts.py decided that): complete
    the login with `face`, or tell the page it failed. Store only; the session row is the caller's."""
    store = runtime.store
    login = pending.get(store, row.login_id)
    if login is None:
        return LoginOutcome("login_unknown")
    current = _current(runtime, row.login_id)
    if current is not None and current.get("biz_ref") == row.biz_ref:
        shown = {**current, "state": "passed" if passed else "failed"}
        _put(runtime, login, {**shown, "reason": reason} if reason else shown)
    if not passed:
        pending.fail(store, login, "face_failed", {"why": reason})
        return LoginOutcome(reason)
    try:
        progress = pending.complete(store, row.login_id, subject=row.subject, amr=[assurance.FACE], method=METHOD)
    except pending.CompletionRefused as exc:
        pending.fail(store, login, exc.reason)
        return LoginOutcome(exc.reason)
    return LoginOutcome(None, progress.done)
