"""Pending browser logins on the in-process store: binding, single-use challenges and completion, step-up."""

from __future__ import annotations

import pytest

from authsvc.login import pending
from authsvc.store.memory import MemoryStore
from authsvc.tokens.assurance import HIGH, LOW, SUBSTANTIAL
from authsvc.tokens.issuing import Authentication

ALICE, BOB = "a" * 32, "b" * 32
CARD_PIN = ["sc", "hwk", "pin"]
CARD = Authentication(subject=ALICE, auth_time=0, acr=SUBSTANTIAL, amr=["sc", "hwk", "pin", "mfa"])


def _card(store: MemoryStore, login_id: str, subject: str = ALICE, method: str = "card") -> pending.Progress:
    return pending.complete(store, login_id, subject=subject, amr=CARD_PIN, method=method)


def _request(**changes: object) -> pending.LoginRequest:
    values: dict[str, object] = dict(
        client_id="portal",
        client_name="Portal",
        redirect_uri="https://portal.example/cb",
        scope=["openid"],
        code_challenge="c" * 43,
        acr=SUBSTANTIAL,
        locale="zh-CN",
        state="xyz",
    )
    values.update(changes)
    return pending.LoginRequest(**values)  # type: ignore[arg-type]


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def test_a_login_is_bound_to_the_browser_that_started_it(store: MemoryStore) -> None:
    secret = pending.new_browser_secret()
    login = pending.create(store, _request(), secret, 600)
    found = pending.get(store, login.login_id)
    assert found is not None and found.request == _request()
    assert pending.bound_to(found, secret)
    assert not pending.bound_to(found, pending.new_browser_secret()) and not pending.bound_to(found, None)
    assert secret not in str(store._data)  # only its hash is kept
    assert pending.get(store, "../../etc") is None


def test_a_challenge_is_spent_by_its_first_use_and_replaced_by_a_newer_one(store: MemoryStore) -> None:
    login = pending.create(store, _request(), pending.new_browser_secret(), 600)
    pending.put_challenge(store, login, "card", b"1" * 32, 60)
    pending.put_challenge(store, login, "card", b"2" * 32, 60)
    assert pending.take_challenge(store, login.login_id, "card") == b"2" * 32
    assert pending.take_challenge(store, login.login_id, "card") is None
    assert pending.take_challenge(store, login.login_id, "phone") is None  # each authenticator has its own


def test_completion_is_single_use_and_finish_hands_it_over_once(store: MemoryStore) -> None:
    browser = pending.new_browser_secret()
    login = pending.create(store, _request(), browser, 600)
    assert pending.status(store, login) == {"status": "pending", "reached": None, "missing": ["card", "ecard"]}
    assert pending.finish(store, login.login_id, browser) is None  # nothing to continue with yet
    progress = _card(store, login.login_id)
    assert progress.done and progress.missing == []
    assert (progress.auth.subject, progress.auth.acr, progress.auth.amr) == (ALICE, SUBSTANTIAL, CARD.amr)
    with pytest.raises(pending.CompletionRefused) as again:
        _card(store, login.login_id, method="ecard")
    assert again.value.reason == "login_completed"
    assert pending.status(store, login) == {"status": "done"}
    assert pending.finish(store, login.login_id, pending.new_browser_secret()) is None  # another browser
    assert pending.finish(store, login.login_id, None) is None
    finished = pending.finish(store, login.login_id, browser)
    assert finished is not None and finished[1] == progress.auth and finished[2] == "card"
    assert finished[0].request == _request()
    assert pending.finish(store, login.login_id, browser) is None
    with pytest.raises(pending.CompletionRefused) as gone:
        _card(store, login.login_id)
    assert gone.value.reason == "login_unknown"


def test_a_level_too_low_is_kept_and_the_missing_check_offered(store: MemoryStore) -> None:
    browser = pending.new_browser_secret()
    login = pending.create(store, _request(acr=HIGH), browser, 600)
    progress = _card(store, login.login_id)
    assert not progress.done and progress.missing == ["face"] and progress.auth.acr == SUBSTANTIAL
    assert pending.status(store, login) == {"status": "pending", "reached": SUBSTANTIAL, "missing": ["face"]}
    assert pending.subject_of(store, login) == ALICE
    assert pending.finish(store, login.login_id, browser) is None
    # the face of somebody else does not add up with Alice's card
    with pytest.raises(pending.CompletionRefused) as other:
        pending.complete(store, login.login_id, subject=BOB, amr=["face"], method="face")
    assert other.value.reason == "subject_mismatch"
    done = pending.complete(store, login.login_id, subject=ALICE, amr=["face"], method="face")
    assert done.done and done.auth.acr == HIGH and done.auth.amr == ["sc", "hwk", "pin", "face", "mfa"]
    finished = pending.finish(store, login.login_id, browser)
    assert finished is not None and finished[1].acr == HIGH and finished[2] == "face"
    assert store.get(f"pending:part:{login.login_id}") is None  # nothing left behind


def test_a_face_check_alone_identifies_nobody(store: MemoryStore) -> None:
    login = pending.create(store, _request(acr=LOW), pending.new_browser_secret(), 600)
    assert pending.subject_of(store, login) is None
    with pytest.raises(pending.CompletionRefused) as nobody:
        pending.complete(store, login.login_id, subject=ALICE, amr=["face"], method="face")
    assert nobody.value.reason == "no_level"
    assert pending.subject_of(store, login) is None  # and it did not identify Alice for a later method


def test_step_up_adds_the_missing_factor_of_the_same_person(store: MemoryStore) -> None:
    request = _request(acr=HIGH, subject=ALICE, amr=CARD.amr, session_acr=SUBSTANTIAL)
    login = pending.create(store, request, pending.new_browser_secret(), 600)
    assert pending.status(store, login)["missing"] == ["face"]
    with pytest.raises(pending.CompletionRefused) as other:
        pending.complete(store, login.login_id, subject=BOB, amr=["face"], method="face")
    assert other.value.reason == "subject_mismatch"
    reached = pending.complete(store, login.login_id, subject=ALICE, amr=["face"], method="face")
    assert reached.done and reached.auth.acr == HIGH and reached.auth.amr == ["sc", "hwk", "pin", "face", "mfa"]


def test_failures_are_shown_to_the_page_until_it_completes(store: MemoryStore) -> None:
    login = pending.create(store, _request(), pending.new_browser_secret(), 600)
    pending.fail(store, login, "pin_wrong", {"tries_left": 2})
    failure = {"reason": "pin_wrong", "tries_left": 2}
    assert pending.status(store, login)["last_failure"] == failure
    _card(store, login.login_id)
    assert pending.status(store, login) == {"status": "done"}


def test_cancel_ends_the_login(store: MemoryStore) -> None:
    login = pending.create(store, _request(), pending.new_browser_secret(), 600)
    assert pending.cancel(store, login.login_id) and not pending.cancel(store, login.login_id)
    with pytest.raises(pending.CompletionRefused):
        _card(store, login.login_id)
