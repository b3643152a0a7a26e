"""Pending browser logins on the in-process store: binding, single-use challenges and completion, step-up."""

from __future__ import annotations

import pytest

from authsvc.login import pending
from authsvc.store.memory import MemoryStore
from authsvc.tokens.assurance import ACR_CARD_PIN, ACR_CARD_PIN_FACE
from authsvc.tokens.issuing import Authentication

ALICE, BOB = "a" * 32, "b" * 32
CARD = Authentication(subject=ALICE, auth_time=1_800_000_000, acr=ACR_CARD_PIN, amr=["sc", "hwk", "pin", "mfa"])


def _request(**changes: object) -> pending.LoginRequest:
    values: dict[str, object] = dict(
        client_id="portal",
        client_name="Portal",
        redirect_uri="https://portal.example/cb",
        scope=["openid"],
        code_challenge="c" * 43,
        acr=ACR_CARD_PIN,
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
    assert pending.status(store, login) == {"status": "pending"}
    assert pending.finish(store, login.login_id, browser) is None  # nothing to continue with yet
    assert pending.complete(store, login.login_id, CARD, method="card") == CARD
    with pytest.raises(pending.CompletionRefused) as again:
        pending.complete(store, login.login_id, CARD, method="phone")
    assert again.value.reason == "login_completed"
    assert pending.status(store, login) == {"status": "done"}
    assert pending.finish(store, login.login_id, pending.new_browser_secret()) is None  # another browser
    assert pending.finish(store, login.login_id, None) is None
    finished = pending.finish(store, login.login_id, browser)
    assert finished is not None and finished[1:] == (CARD, "card") and finished[0].request == _request()
    assert pending.finish(store, login.login_id, browser) is None
    with pytest.raises(pending.CompletionRefused) as gone:
        pending.complete(store, login.login_id, CARD, method="card")
    assert gone.value.reason == "login_unknown"


def test_a_level_too_low_does_not_complete(store: MemoryStore) -> None:
    login = pending.create(store, _request(acr=ACR_CARD_PIN_FACE), pending.new_browser_secret(), 600)
    with pytest.raises(pending.CompletionRefused) as low:
        pending.complete(store, login.login_id, CARD, method="card")
    assert low.value.reason == "insufficient_level"
    assert pending.status(store, login) == {"status": "pending"}


def test_step_up_adds_the_missing_factor_of_the_same_person(store: MemoryStore) -> None:
    request = _request(acr=ACR_CARD_PIN_FACE, subject=ALICE, amr=CARD.amr, session_acr=ACR_CARD_PIN)
    login = pending.create(store, request, pending.new_browser_secret(), 600)
    face = Authentication(subject=BOB, auth_time=1_800_000_100, acr=ACR_CARD_PIN_FACE, amr=["face"])
    with pytest.raises(pending.CompletionRefused) as other:
        pending.complete(store, login.login_id, face, method="face")
    assert other.value.reason == "subject_mismatch"
    reached = pending.complete(
        store, login.login_id, Authentication(ALICE, face.auth_time, face.acr, face.amr), method="face"
    )
    assert reached.acr == ACR_CARD_PIN_FACE and reached.amr == ["sc", "hwk", "pin", "mfa", "face"]


def test_failures_are_shown_to_the_page_until_it_completes(store: MemoryStore) -> None:
    login = pending.create(store, _request(), pending.new_browser_secret(), 600)
    pending.fail(store, login, "pin_wrong", {"tries_left": 2})
    failure = {"reason": "pin_wrong", "tries_left": 2}
    assert pending.status(store, login) == {"status": "pending", "last_failure": failure}
    pending.complete(store, login.login_id, CARD, method="card")
    assert pending.status(store, login) == {"status": "done"}


def test_cancel_ends_the_login(store: MemoryStore) -> None:
    login = pending.create(store, _request(), pending.new_browser_secret(), 600)
    assert pending.cancel(store, login.login_id) and not pending.cancel(store, login.login_id)
    with pytest.raises(pending.CompletionRefused):
        pending.complete(store, login.login_id, CARD, method="card")
