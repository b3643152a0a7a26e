"""Applying a verified verdict: record it on its session exactly once, complete or fail the login when it came in
time, and audit whatever it did. The rules are authsvc/liveness/rules.py; the route (authsvc/liveness/endpoints.py)
answers the vendor by the `Applied` this returns.

* in time, session open: the row takes the verdict (a conditional UPDATE: of concurrent copies one wins) and the
  login gets `face` (authsvc/login/face.py) or the page learns why it failed;
* the same verdict again: nothing changes;
* after the session's time, or for a superseded session: recorded once as late, completes nothing, audited;
* a different verdict for a session that has one (a fail then a pass, or the reverse): refused and audited;
* for a session we never opened, or with another biz_ref: refused and audited.
"""

from __future__ import annotations

import hmac
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from authsvc.audit import service as audit
from authsvc.liveness import repository, rules
from authsvc.liveness.models import LivenessSession, SessionState
from authsvc.liveness.rules import Applied
from authsvc.liveness.vendor import Verdict
from authsvc.login import face
from authsvc.runtime import Runtime

EVENT = "liveness_verdict"
log = logging.getLogger("sscard.liveness")


def _audit(
    db: Session, outcome: str, reason: str | None, verdict: Verdict, row: LivenessSession | None, **extra: Any
) -> None:
    detail: dict[str, Any] = {"vendor": verdict.vendor, "live": verdict.live, "score": verdict.score, **extra}
    if row is not None:
        detail["login_id"] = row.login_id
    audit.record(db, event=EVENT, outcome=outcome, reason=reason, subject=row.subject if row else None, detail=detail)


def apply(runtime: Runtime, db: Session, verdict: Verdict) -> Applied:
    """Record and act on one verified verdict (its nonce already spent). Raises SQLAlchemyError or RedisError on an
    outage; the caller rolls back and asks the vendor to retry."""
    now = datetime.fromtimestamp(runtime.liveness.clock(), UTC)
    state, reason = rules.judged(verdict.live, verdict.score, runtime.settings.liveness_min_score)
    digest = rules.digest(verdict)
    won = repository.claim_open(
        db,
        vendor=verdict.vendor,
        session_id=verdict.session_id,
        biz_ref=verdict.biz_ref,
        state=state,
        digest=digest,
        live=verdict.live,
        score=verdict.score,
        verdict_at=verdict.event_time,
        now=now,
    )
    row = repository.by_vendor_session(db, verdict.vendor, verdict.session_id)
    if row is None:
        _audit(db, "failure", "session_unknown", verdict, None)
        return Applied.UNKNOWN
    if not hmac.compare_digest(row.biz_ref.encode(), verdict.biz_ref.encode()):
        _audit(db, "failure", "biz_ref_mismatch", verdict, row)
        return Applied.MISMATCH
    if won:
        passed = state == SessionState.PASSED
        outcome = face.verdict_arrived(runtime, row, passed=passed, reason=reason)
        if passed and outcome.reason is None:
            _audit(db, "success", None, verdict, row, done=outcome.done)
            return Applied.PASSED
        _audit(db, "failure", outcome.reason or reason, verdict, row)
        return Applied.PASSED if passed else Applied.FAILED
    applied = rules.after_the_fact(row.state, row.verdict_digest, digest)
    if applied in (Applied.LATE, Applied.SUPERSEDED):
        recorded = repository.record_late(
            db, row, digest=digest, live=verdict.live, score=verdict.score, verdict_at=verdict.event_time, now=now
        )
        if not recorded:  # another copy, or another verdict, got there first: judge against what it wrote
            row = repository.by_vendor_session(db, verdict.vendor, verdict.session_id)
            assert row is not None
            applied = rules.after_the_fact(row.state, row.verdict_digest, digest)
    if applied is Applied.DUPLICATE:
        return applied  # the verdict this session has: nothing to do, nothing new to audit
    reason_of = {
        Applied.LATE: "verdict_late",
        Applied.SUPERSEDED: "verdict_superseded",
        Applied.CONFLICT: "verdict_conflict",
    }
    if applied is Applied.CONFLICT:
        log.warning("liveness verdict contradicting the recorded one refused (vendor %s)", verdict.vendor)
    _audit(db, "failure", reason_of[applied], verdict, row, recorded_state=row.state)
    return applied
