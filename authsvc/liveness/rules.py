"""The verdict rules, pure: what a verdict means for its session, and when two verdicts are the same one.

A verdict passes only when the vendor saw a live person AND the comparison with the reference photo scored at
least the threshold (SSCARD_LIVENESS_MIN_SCORE); anything else fails. Verdicts are compared by digest: the vendor
re-signs a retry (new timestamp and nonce) but says the same thing, so a duplicate is recognised by what it says.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

from authsvc.liveness.models import SessionState
from authsvc.liveness.vendor import Verdict


class Applied(StrEnum):
    """What a verified verdict did; each one has its answer to the vendor (authsvc/liveness/endpoints.py)."""

    PASSED = "passed"  # in time, live, score at or above the threshold: the login got `face`
    FAILED = "failed"  # in time, not live or scoring below the threshold: the page says so
    DUPLICATE = "duplicate"  # the verdict this session already has: nothing changes
    LATE = "late"  # the session's time was over: recorded, completes nothing
    SUPERSEDED = "superseded"  # the citizen had started another face check: recorded, completes nothing
    CONFLICT = "conflict"  # contradicts the verdict the session already has: refused
    UNKNOWN = "unknown"  # no such session of this vendor
    MISMATCH = "mismatch"  # the session exists, but for another biz_ref: refused


def judged(live: bool, score: float, min_score: float) -> tuple[SessionState, str | None]:
    """The session's state after this verdict in time, and the failure's reason."""
    if not live:
        return SessionState.FAILED, "not_live"
    if score < min_score:
        return SessionState.FAILED, "low_score"
    return SessionState.PASSED, None


def digest(verdict: Verdict) -> str:
    text = f"{verdict.vendor}\n{verdict.session_id}\n{verdict.biz_ref}\n{int(verdict.live)}\n{verdict.score!r}"
    return hashlib.sha256(text.encode()).hexdigest()


def after_the_fact(state: str, recorded_digest: str | None, new_digest: str) -> Applied:
    """A verdict for a session that was no longer open (or is past its time) when it arrived."""
    if recorded_digest is not None:
        return Applied.DUPLICATE if recorded_digest == new_digest else Applied.CONFLICT
    return Applied.SUPERSEDED if state == SessionState.SUPERSEDED else Applied.LATE
