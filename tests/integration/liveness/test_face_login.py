"""The face as a login method, end to end over HTTP against the sandbox vendor, on both backends: a verdict in time
completes the login at the wanted level; failures say why and may be tried again; a verdict that never comes times
out cleanly; whoever cannot start a face check is told why."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

import pytest

from authsvc.database import unit_of_work
from authsvc.liveness import wire
from authsvc.liveness.photos import set_reference_photo
from authsvc.registry.masking import mask_photo_ref
from authsvc.tokens import assurance
from tests.fixtures.service import LiveServer
from tests.integration.liveness.support import OK, REFERENCE, SSN, FaceHarness, Login, harness, problem


def test_a_live_matching_face_completes_the_login_at_high(faces: FaceHarness) -> None:
    login = faces.login()
    answer = faces.start(login)
    assert answer.status_code == 200, answer.text
    started = answer.json()
    assert started["capture_url"].startswith(faces.sandbox.public_url + "/capture/")
    assert started["qr_svg"].startswith("<svg") and 0 < started["expires_in"] <= 180
    assert answer.headers["cache-control"] == "no-store"
    waiting = faces.face_state(login)
    assert waiting is not None and waiting["state"] == "waiting" and 0 < waiting["expires_in"] <= started["expires_in"]

    session_id = started["capture_url"].rsplit("/", 1)[1]
    [delivery] = faces.sandbox.capture(session_id, "right_person")
    assert problem(delivery) == OK
    assert faces.status(login)["status"] == "done"
    assert faces.face_state(login) == {"state": "passed", "expires_in": 0}
    auth = faces.finish(login)
    assert auth is not None and auth.acr == assurance.HIGH
    assert auth.subject == faces.subject and "face" in auth.amr and "mfa" in auth.amr
    [row] = faces.rows(login)
    assert (row.state, row.live, row.score, row.late) == ("passed", True, 96.5, False)
    assert faces.verdict_events() == [("success", None)]


def test_someone_else_and_a_photo_fail_and_the_citizen_may_try_again(faces: FaceHarness) -> None:
    login = faces.login()
    [delivery] = faces.capture(login, "someone_else")
    assert problem(delivery) == OK  # the verdict is ours: the vendor stops retrying
    status = faces.status(login)
    assert status["status"] == "pending" and status["last_failure"] == {"reason": "face_failed", "why": "low_score"}
    assert faces.face_state(login) == {"state": "failed", "expires_in": 0, "reason": "low_score"}

    [delivery] = faces.capture(login, "photo_of_photo")
    assert problem(delivery) == OK
    assert faces.status(login)["last_failure"] == {"reason": "face_failed", "why": "not_live"}

    [delivery] = faces.capture(login, "right_person")
    assert problem(delivery) == OK and faces.status(login)["status"] == "done"
    assert [r.state for r in faces.rows(login)] == ["failed", "failed", "passed"]
    assert faces.verdict_events() == [("failure", "low_score"), ("failure", "not_live"), ("success", None)]


def test_the_score_threshold_is_a_setting(live_server_factory: Callable[..., LiveServer]) -> None:
    for faces in harness(live_server_factory, liveness_min_score=97.0):
        login = faces.login()
        [delivery] = faces.capture(login, "right_person")  # live, but 96.5 < 97
        assert problem(delivery) == OK
        assert faces.status(login)["last_failure"] == {"reason": "face_failed", "why": "low_score"}
        assert faces.finish(login) is None


def test_a_verdict_that_never_arrives_times_out_and_the_page_may_start_again(faces: FaceHarness) -> None:
    login = faces.login()
    assert faces.capture(login, "right_person", "never") == []
    assert faces.face_state(login)["state"] == "waiting"  # type: ignore[index]
    faces.move_clock(181)  # past SSCARD_LIVENESS_SESSION_TTL (180)
    assert faces.face_state(login) == {"state": "timed_out", "expires_in": 0}
    assert faces.status(login)["status"] == "pending"

    [delivery] = faces.capture(login, "right_person")  # started again, after the timeout
    assert problem(delivery) == OK and faces.status(login)["status"] == "done"
    assert [r.state for r in faces.rows(login)] == ["expired", "passed"]  # the one whose verdict never came


def test_a_face_check_needs_a_person_identified_first(faces: FaceHarness) -> None:
    login = faces.login(amr=[])
    assert problem(faces.start(login)) == (409, "subject_unknown")
    assert faces.rows(login) == []


def test_without_a_reference_photo_no_face_check_starts(faces: FaceHarness) -> None:
    with unit_of_work(faces.runtime.sessions) as db:
        set_reference_photo(db, ssn=SSN, photo_ref=None)
    login = faces.login()
    assert problem(faces.start(login)) == (409, "no_reference_photo")
    with unit_of_work(faces.runtime.sessions) as db:
        set_reference_photo(db, ssn=SSN, photo_ref="gallery:not-enrolled")
    assert problem(faces.start(login)) == (409, "face_refused")  # the vendor has no such photo
    assert faces.rows(login) == []


def test_only_the_browser_that_started_the_login_can_start_its_face_check(faces: FaceHarness) -> None:
    login = faces.login()
    login.browser.cookies.clear()
    assert problem(faces.start(login)) == (404, "login_unknown")
    login.browser.cookies.set("sscard_login", "guessed")
    assert problem(faces.start(login)) == (404, "login_unknown")


def test_a_vendor_that_does_not_answer_is_a_clear_503(faces: FaceHarness) -> None:
    login = faces.login()
    faces.sandbox.faults.http_status = 502
    assert problem(faces.start(login)) == (503, "face_unavailable")
    assert faces.rows(login) == []
    faces.sandbox.faults.http_status = None
    ours = faces.sandbox.client_keys
    faces.sandbox.client_keys = wire.KeyRing({})  # the vendor no longer knows our key: it refuses, signed
    assert problem(faces.start(login)) == (503, "face_unavailable")  # nothing the citizen can change
    faces.sandbox.client_keys = ours
    assert faces.start(login).status_code == 200


def test_without_a_vendor_configured_no_face_check_is_offered(
    live_server_factory: Callable[..., LiveServer],
) -> None:
    from authsvc.login import face

    service = live_server_factory()
    assert not face.available(service.runtime)
    for faces in harness(live_server_factory):
        assert face.available(faces.runtime)


def test_a_login_may_start_only_a_few_face_checks(faces: FaceHarness) -> None:
    from authsvc.login.face import MAX_STARTS

    login = faces.login()
    for _ in range(MAX_STARTS):
        assert faces.start(login).status_code == 200
    assert problem(faces.start(login)) == (429, "too_many_attempts")
    assert len(faces.rows(login)) == MAX_STARTS  # the vendor was not asked again
    assert [r.state for r in faces.rows(login)].count("open") == 1


def test_no_face_check_starts_for_a_login_that_does_not_need_one(faces: FaceHarness) -> None:
    # Each start is a session the vendor bills: a login that is done, or has its face already, gets none.
    done = faces.login()
    [delivery] = faces.capture(done, "right_person")
    assert problem(delivery) == OK and faces.status(done)["status"] == "done"
    opened = len(faces.sandbox.sessions)
    assert problem(faces.start(done)) == (409, "method_not_offered")
    assert len(faces.sandbox.sessions) == opened and len(faces.rows(done)) == 1

    faced = faces.login(acr=assurance.HIGH, amr=["sc"])  # a card without its PIN: the face, then the PIN
    [delivery] = faces.capture(faced, "right_person")
    assert problem(delivery) == OK
    assert faces.status(faced)["missing"] == [assurance.METHOD_CARD]  # the face is proven; the PIN is missing
    opened = len(faces.sandbox.sessions)
    assert problem(faces.start(faced)) == (409, "method_not_offered")
    assert len(faces.sandbox.sessions) == opened  # the vendor was not asked
    assert [r.state for r in faces.rows(faced)] == ["passed"]
    assert faces.face_state(faced) == {"state": "passed", "expires_in": 0}  # the page's view is unchanged


def test_a_vendor_answering_a_session_id_it_gave_before_is_unavailable_not_a_500(faces: FaceHarness) -> None:
    first, second = faces.login(), faces.login()
    taken = faces.started(first)
    opens = faces.sandbox._new_session

    def reused(doc: dict[str, object]) -> dict[str, object]:
        answer = opens(doc)
        faces.sandbox.sessions[taken] = faces.sandbox.sessions.pop(answer["session_id"])  # type: ignore[arg-type]
        return {**answer, "session_id": taken, "capture_url": f"{faces.sandbox.public_url}/capture/{taken}"}

    faces.sandbox._new_session = reused  # type: ignore[method-assign]
    assert problem(faces.start(second)) == (503, "face_unavailable")
    assert faces.rows(second) == [] and faces.face_state(second) is None
    [row] = faces.rows(first)
    assert (row.state, row.login_id) == ("open", first.login_id)  # the first login's session is untouched


def test_a_vendor_refusal_naming_the_photo_is_logged_masked(
    faces: FaceHarness, caplog: pytest.LogCaptureFixture
) -> None:
    def refuses(doc: dict[str, object]) -> dict[str, object]:
        return {"code": "REFERENCE_UNKNOWN", "message": f"reference {doc['reference_id']} is not in the gallery"}

    faces.sandbox._new_session = refuses  # type: ignore[method-assign]
    login = faces.login()
    with caplog.at_level(logging.INFO):
        assert problem(faces.start(login)) == (409, "face_refused")
    assert "REFERENCE_UNKNOWN" in caplog.text and mask_photo_ref(REFERENCE) in caplog.text
    assert REFERENCE not in caplog.text


def test_the_page_says_timed_out_exactly_when_a_verdict_would_be_late(faces: FaceHarness) -> None:
    # In the last second of a session the verdict still counts, so the page must not say it did not arrive in time.
    login = faces.login()
    session_id = faces.started(login)
    expires_at = faces.rows(login)[0].expires_at.timestamp()
    faces.runtime.liveness.clock = lambda: expires_at - 0.5
    assert faces.face_state(login) == {"state": "waiting", "expires_in": 1}
    faces.runtime.liveness.clock = lambda: expires_at
    assert faces.face_state(login) == {"state": "timed_out", "expires_in": 0}
    [late] = faces.sandbox.capture(session_id, "right_person")
    assert problem(late) == OK and faces.rows(login)[0].late and faces.status(login)["status"] == "pending"

    faces.move_clock(0)
    second = faces.login()
    session_id = faces.started(second)
    expires_at = faces.rows(second)[0].expires_at.timestamp()
    faces.runtime.liveness.clock = lambda: expires_at - 0.5
    [in_time] = faces.sandbox.capture(session_id, "right_person")
    assert problem(in_time) == OK and faces.status(second)["status"] == "done"


def _start_together(faces: FaceHarness, login: Login) -> list[int]:
    barrier = threading.Barrier(2)
    answers: list[int] = []

    def start() -> None:
        barrier.wait()
        answers.append(faces.start(login).status_code)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_two_starts_at_once_leave_one_face_check_open(faces: FaceHarness) -> None:
    # A double click or two tabs: each start supersedes the one before, also when they overlap (on PostgreSQL the
    # other's uncommitted session was invisible, and both stayed open, either one's verdict completing the login).
    for _ in range(3):
        login = faces.login()
        assert _start_together(faces, login) == [200, 200]
        first, second = faces.rows(login)
        assert (first.state, second.state) == ("superseded", "open")
        shown = faces.runtime.store.get(f"pending:face:{login.login_id}")
        assert shown is not None and json.loads(shown)["biz_ref"] == second.biz_ref  # the page shows the open one
