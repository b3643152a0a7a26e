"""The verdict rules: threshold, duplicates told by what they say, contradictions, late and superseded verdicts."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from authsvc.liveness.models import SessionState
from authsvc.liveness.rules import Applied, after_the_fact, digest, judged
from authsvc.liveness.vendor import Verdict

VERDICT = Verdict("sandbox", "LV1", "b" * 32, True, 90.0, datetime(2026, 11, 28, tzinfo=UTC), "n" * 32, 306)


@pytest.mark.parametrize(
    ("live", "score", "expected"),
    [
        (True, 80.0, (SessionState.PASSED, None)),
        (True, 100.0, (SessionState.PASSED, None)),
        (True, 79.99, (SessionState.FAILED, "low_score")),
        (False, 100.0, (SessionState.FAILED, "not_live")),
        (False, 0.0, (SessionState.FAILED, "not_live")),
    ],
)
def test_a_verdict_passes_only_live_and_at_or_above_the_threshold(
    live: bool, score: float, expected: tuple[SessionState, str | None]
) -> None:
    assert judged(live, score, 80.0) == expected


def test_the_same_verdict_resigned_has_the_same_digest() -> None:
    retry = replace(VERDICT, nonce="m" * 32, event_time=datetime(2026, 11, 28, 0, 5, tzinfo=UTC))
    assert digest(retry) == digest(VERDICT)


@pytest.mark.parametrize(
    "change",
    [{"live": False}, {"score": 90.5}, {"session_id": "LV2"}, {"biz_ref": "c" * 32}, {"vendor": "other"}],
)
def test_a_verdict_that_says_anything_else_has_another_digest(change: dict[str, object]) -> None:
    assert digest(replace(VERDICT, **change)) != digest(VERDICT)  # type: ignore[arg-type]


def test_verdicts_after_the_fact() -> None:
    mine = digest(VERDICT)
    other = digest(replace(VERDICT, live=False))
    assert after_the_fact(SessionState.PASSED, mine, mine) is Applied.DUPLICATE
    assert after_the_fact(SessionState.FAILED, other, mine) is Applied.CONFLICT
    assert after_the_fact(SessionState.EXPIRED, other, mine) is Applied.CONFLICT
    assert after_the_fact(SessionState.OPEN, None, mine) is Applied.LATE  # open, but past its time
    assert after_the_fact(SessionState.EXPIRED, None, mine) is Applied.LATE
    assert after_the_fact(SessionState.SUPERSEDED, None, mine) is Applied.SUPERSEDED
    assert after_the_fact(SessionState.SUPERSEDED, mine, mine) is Applied.DUPLICATE
