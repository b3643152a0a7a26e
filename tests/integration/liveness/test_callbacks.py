"""The vendor's verdict callback on both backends, against every fault the sandbox vendor can make: duplicated,
concurrent, replayed, late, out of order, swapped, unsigned, wrongly signed, stale, for another biz_ref; the key
rotation with two keys valid at once; and outages answered in the vendor's retry form."""

from __future__ import annotations

import pytest
from redis import RedisError
from sqlalchemy.exc import OperationalError

from authsvc.liveness import repository, wire
from authsvc.tokens import assurance
from keys.channel_keys import promote
from tests.integration.liveness.support import OK, FaceHarness, problem


def test_the_same_verdict_twice_changes_nothing_and_is_acknowledged(faces: FaceHarness) -> None:
    login = faces.login()
    deliveries = faces.capture(login, "right_person", "duplicate")
    assert [problem(d) for d in deliveries] == [OK, OK]
    assert faces.verdict_events() == [("success", None)]  # applied once
    [row] = faces.rows(login)
    assert row.state == "passed" and not row.late
    assert faces.finish(login) is not None


def test_copies_delivered_at_the_same_moment_apply_once(faces: FaceHarness) -> None:
    login = faces.login()
    deliveries = faces.capture(login, "right_person", "concurrent")
    assert len(deliveries) == 4 and all(problem(d) == OK for d in deliveries), [d.answer for d in deliveries]
    assert faces.verdict_events() == [("success", None)]
    assert [r.state for r in faces.rows(login)] == ["passed"]
    auth = faces.finish(login)
    assert auth is not None and auth.acr == assurance.HIGH


def test_a_replayed_message_is_refused(faces: FaceHarness) -> None:
    login = faces.login()
    first, replayed = faces.capture(login, "right_person", "replay")
    assert problem(first) == OK
    assert problem(replayed) == (409, "callback_replayed")
    assert faces.verdict_events() == [("success", None)]


def test_a_fail_then_a_pass_the_pass_is_refused_and_audited(faces: FaceHarness) -> None:
    login = faces.login()
    failed, passed = faces.capture(login, "right_person", "fail_then_pass")
    assert problem(failed) == OK
    assert problem(passed) == (409, "verdict_conflict")
    assert faces.verdict_events() == [("failure", "not_live"), ("failure", "verdict_conflict")]
    [row] = faces.rows(login)
    assert (row.state, row.live) == ("failed", False)
    assert faces.status(login)["status"] == "pending"


def test_a_verdict_after_the_session_time_is_recorded_as_late_and_completes_nothing(faces: FaceHarness) -> None:
    login = faces.login()
    assert faces.capture(login, "right_person", "late") == []
    faces.move_clock(181)
    assert faces.face_state(login) == {"state": "timed_out", "expires_in": 0}
    [late] = faces.sandbox.release()
    assert problem(late) == OK  # acknowledged: retrying would change nothing
    [row] = faces.rows(login)
    assert (row.state, row.late, row.live) == ("expired", True, True)
    assert faces.status(login)["status"] == "pending" and faces.finish(login) is None
    assert faces.verdict_events() == [("failure", "verdict_late")]
    # The same late verdict again: nothing new; a contradicting one: refused.
    session = faces.sandbox.sessions[row.vendor_session_id]
    session.faults.clear()  # the vendor retries, now delivering at once
    assert problem(faces.sandbox.deliver(session, live=True, score=96.5)[0]) == OK
    assert problem(faces.sandbox.deliver(session, live=False, score=10.0)[0]) == (409, "verdict_conflict")
    assert faces.verdict_events() == [("failure", "verdict_late"), ("failure", "verdict_conflict")]


def test_two_sessions_verdicts_swapped_only_the_current_one_counts(faces: FaceHarness) -> None:
    login = faces.login()
    assert faces.capture(login, "right_person", "hold") == []  # the first attempt, its verdict held back
    assert faces.capture(login, "someone_else", "hold") == []  # the citizen started again: the first is superseded
    newer, older = faces.sandbox.release(reverse=True)
    assert problem(newer) == OK and problem(older) == OK
    first, second = faces.rows(login)
    assert (first.state, first.late, first.live) == ("superseded", True, True)
    assert second.state == "failed"
    assert faces.status(login)["last_failure"] == {"reason": "face_failed", "why": "low_score"}
    assert faces.finish(login) is None  # the superseded pass did not complete the login
    assert faces.verdict_events() == [("failure", "low_score"), ("failure", "verdict_superseded")]


@pytest.mark.parametrize(
    ("fault", "refusal"),
    [
        ("unsigned", (400, "callback_malformed")),
        ("wrong_key", (403, "callback_signature")),
        ("stale", (403, "callback_stale")),
        ("wrong_biz_ref", (422, "biz_ref_mismatch")),
    ],
)
def test_forged_stale_and_misaddressed_verdicts_are_refused_and_change_nothing(
    faces: FaceHarness, fault: str, refusal: tuple[int, str]
) -> None:
    login = faces.login()
    [delivery] = faces.capture(login, "right_person", fault)
    assert problem(delivery) == refusal
    assert delivery.status != 200
    [row] = faces.rows(login)
    assert row.state == "open" and row.verdict_digest is None
    assert faces.face_state(login)["state"] == "waiting"  # type: ignore[index]
    assert faces.status(login)["status"] == "pending"


def test_a_callback_for_an_unknown_session_or_vendor_is_refused(faces: FaceHarness) -> None:
    login = faces.login()
    session_id = faces.started(login)
    session = faces.sandbox.sessions[session_id]
    session.session_id = "LV" + "0" * 24  # a session the service never opened
    [delivery] = faces.sandbox.deliver(session, live=True, score=99.0)
    assert problem(delivery) == (404, "session_unknown")
    headers, body = faces.sandbox.signed_callback(session, live=True, score=99.0)
    answer = login.browser.post("/v1/liveness/callbacks/another", content=body, headers=headers)
    assert (answer.status_code, answer.json()["reason"]) == (404, "vendor_unknown")
    assert faces.rows(login)[0].state == "open"


def test_the_vendors_key_rotation_two_keys_verify_then_the_retired_one_does_not(faces: FaceHarness) -> None:
    sandbox = faces.sandbox
    old = sandbox.signing_key_id
    new_kid = faces.import_vendor_key(sandbox.new_key("vendor-2027"))  # announced: stored as next
    sandbox.use_key("vendor-2027")
    login = faces.login()
    assert [problem(d) for d in faces.capture(login, "right_person")] == [OK]  # the next key verifies
    sandbox.use_key(old)
    second = faces.login()
    assert [problem(d) for d in faces.capture(second, "right_person")] == [OK]  # the active one still does
    with faces.runtime.sessions() as db, db.begin():
        promote(db, new_kid)  # the old key is retired
    third = faces.login()
    sandbox.use_key("vendor-2027")  # the vendor signs with its new key only ...
    session_id = faces.started(third)
    sandbox.use_key(old)  # ... and a verdict signed with the retired one is refused
    assert [problem(d) for d in sandbox.capture(session_id, "right_person")] == [(403, "callback_unknown_key")]
    assert faces.rows(third)[0].state == "open"
    sandbox.use_key("vendor-2027")
    [retry] = sandbox.deliver(sandbox.sessions[session_id], live=True, score=96.5)
    assert problem(retry) == OK


def test_a_store_outage_is_answered_with_retry_and_records_nothing(
    faces: FaceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    login = faces.login()
    session_id = faces.started(login)

    def down(*_args: object, **_kwargs: object) -> bool:
        raise RedisError("store down")

    monkeypatch.setattr(faces.runtime.store, "add", down)
    [delivery] = faces.sandbox.capture(session_id, "right_person")
    assert problem(delivery) == (503, "RETRY")
    assert faces.rows(login)[0].state == "open"
    monkeypatch.undo()
    [retry] = faces.sandbox.deliver(faces.sandbox.sessions[session_id], live=True, score=96.5)
    assert problem(retry) == OK and faces.status(login)["status"] == "done"


def test_a_database_outage_is_answered_with_retry_and_records_nothing(
    faces: FaceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    login = faces.login()
    session_id = faces.started(login)

    def down(*_args: object, **_kwargs: object) -> bool:
        raise OperationalError("UPDATE liveness_sessions", {}, Exception("server closed the connection"))

    monkeypatch.setattr(repository, "claim_open", down)
    [delivery] = faces.sandbox.capture(session_id, "right_person")
    assert problem(delivery) == (503, "RETRY")
    monkeypatch.undo()
    assert faces.rows(login)[0].state == "open" and faces.status(login)["status"] == "pending"
    [retry] = faces.sandbox.deliver(faces.sandbox.sessions[session_id], live=True, score=96.5)
    assert problem(retry) == OK and faces.rows(login)[0].state == "passed"


def test_a_verdict_for_a_login_that_is_gone_is_recorded_and_acknowledged(faces: FaceHarness) -> None:
    from authsvc.login import pending

    login = faces.login()
    session_id = faces.started(login)
    assert pending.cancel(faces.runtime.store, login.login_id)
    [delivery] = faces.sandbox.capture(session_id, "right_person")
    assert problem(delivery) == OK
    assert faces.rows(login)[0].state == "passed"
    assert faces.verdict_events() == [("failure", "login_unknown")]


def test_signatures_cover_the_exact_body(faces: FaceHarness) -> None:
    login = faces.login()
    session = faces.sandbox.sessions[faces.started(login)]
    headers, body = faces.sandbox.signed_callback(session, live=False, score=10.0)
    tampered = body.replace(b'"live":false', b'"live":true ')
    answer = login.browser.post("/v1/liveness/callbacks/sandbox", content=tampered, headers=headers)
    assert (answer.status_code, answer.json()["reason"]) == (403, "callback_signature")
    assert answer.headers["content-type"] == "application/problem+json"
    assert wire.H_SIGNATURE in headers and faces.rows(login)[0].state == "open"


def test_a_message_answered_retry_may_be_delivered_again_as_it_was(
    faces: FaceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "Not recorded; deliver it again": nothing of it is kept, its nonce neither, so the same bytes are applied.
    login = faces.login()
    session = faces.sandbox.sessions[faces.started(login)]
    headers, body = faces.sandbox.signed_callback(session, live=True, score=96.5)

    def down(*_args: object, **_kwargs: object) -> bool:
        raise OperationalError("UPDATE liveness_sessions", {}, Exception("server closed the connection"))

    monkeypatch.setattr(repository, "claim_open", down)
    answer = login.browser.post("/v1/liveness/callbacks/sandbox", content=body, headers=headers)
    assert (answer.status_code, answer.json()["code"]) == (503, "RETRY")
    monkeypatch.undo()
    again = login.browser.post("/v1/liveness/callbacks/sandbox", content=body, headers=headers)
    assert (again.status_code, again.json()) == (200, {"code": "OK"})
    assert faces.rows(login)[0].state == "passed" and faces.status(login)["status"] == "done"
    replayed = login.browser.post("/v1/liveness/callbacks/sandbox", content=body, headers=headers)
    assert (replayed.status_code, replayed.json()["reason"]) == (409, "callback_replayed")  # once applied, spent
