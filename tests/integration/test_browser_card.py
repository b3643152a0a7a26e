"""The card as a browser authenticator (Web eID model), through the helper's endpoints with a software card."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from authsvc.audit.models import AuditEvent
from authsvc.database import unit_of_work
from authsvc.runtime import Runtime
from card import cryptogram
from tests.fixtures.oidc import RegisteredClient, register_client
from tests.fixtures.service import issue
from tests.integration.sso import authorize, card_body, login_id_of, request_for, sign_with_card


@pytest.fixture
def portal(runtime: Runtime) -> RegisteredClient:
    return register_client(runtime, name="社保查询")


@pytest.fixture
def helper(client: TestClient) -> TestClient:
    return TestClient(client.app)


@pytest.fixture
def login_id(client: TestClient, portal: RegisteredClient) -> str:
    return login_id_of(authorize(client, request_for(portal)))


def _refused(response, status: int, reason: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["reason"] == reason


def _events(runtime: Runtime) -> list[tuple[str, str | None]]:
    with unit_of_work(runtime.sessions) as db:
        query = select(AuditEvent).where(AuditEvent.event == "browser_card_login").order_by(AuditEvent.id)
        return [(e.outcome, e.reason) for e in db.scalars(query)]


def test_the_helper_learns_the_portal_and_the_origin(helper: TestClient, login_id: str) -> None:
    answer = helper.get(f"/login/{login_id}/card").json()
    assert answer["portal"] == "社保查询" and answer["origin"] == "http://testserver"
    assert answer["acr"] == "urn:sscard:acr:substantial" and 0 < answer["expires_in"] <= 60
    assert helper.get("/login/no-such-login-0000000/card").status_code == 404


@pytest.mark.parametrize("generation", [3, 2])
def test_a_cryptogram_made_for_another_origin_is_refused(
    client: TestClient, helper: TestClient, runtime: Runtime, login_id: str, tmp_path: Path, generation: int
) -> None:
    card = issue(runtime, tmp_path, generation=generation)
    # A phishing site relays this login's challenge: the card signs it bound to the phishing origin.
    relayed = cryptogram.web_context("https://sscard-login.example")
    _refused(sign_with_card(helper, login_id, card.path, context=relayed), 422, "cryptogram_invalid")
    kiosk = cryptogram.kiosk_context("kiosk-1")  # nor is a kiosk's answer usable in a browser
    _refused(sign_with_card(helper, login_id, card.path, context=kiosk), 422, "cryptogram_invalid")
    assert client.get(f"/login/{login_id}/status").json()["last_failure"] == {"reason": "cryptogram_invalid"}
    assert sign_with_card(helper, login_id, card.path).status_code == 200  # the genuine page's origin
    assert client.get(f"/login/{login_id}/status").json() == {"status": "done"}
    assert _events(runtime) == [("failure", "cryptogram_invalid")] * 2 + [("success", None)]


def test_a_replayed_challenge_is_refused(helper: TestClient, runtime: Runtime, login_id: str, tmp_path: Path) -> None:
    card = issue(runtime, tmp_path, generation=3)
    body = card_body(helper, login_id, card.path)
    helper.get(f"/login/{login_id}/card")  # a newer challenge voids the older one
    _refused(helper.post(f"/login/{login_id}/card", json=body), 422, "cryptogram_invalid")
    body = card_body(helper, login_id, card.path)
    assert helper.post(f"/login/{login_id}/card", json=body).status_code == 200
    _refused(helper.post(f"/login/{login_id}/card", json=body), 404, "login_unknown")  # spent


def test_a_completed_login_cannot_be_completed_again(
    helper: TestClient, runtime: Runtime, login_id: str, tmp_path: Path
) -> None:
    card = issue(runtime, tmp_path, generation=2)
    assert sign_with_card(helper, login_id, card.path).status_code == 200
    _refused(sign_with_card(helper, login_id, card.path), 422, "login_completed")


def test_the_pin_is_required(helper: TestClient, runtime: Runtime, login_id: str, tmp_path: Path) -> None:
    card = issue(runtime, tmp_path, generation=3)
    _refused(sign_with_card(helper, login_id, card.path, pin=None), 422, "pin_not_verified")


def test_a_lost_card_is_refused_and_throttled_per_card(
    client: TestClient, helper: TestClient, runtime: Runtime, portal: RegisteredClient, tmp_path: Path
) -> None:
    from authsvc.registry import service as registry

    card = issue(runtime, tmp_path, generation=3)
    with unit_of_work(runtime.sessions) as db:
        registry.set_card_status(db, card.card_number, "reported_lost")
    login_id = login_id_of(authorize(client, request_for(portal)))
    for _ in range(runtime.settings.throttle_card_failures):
        _refused(sign_with_card(helper, login_id, card.path), 422, "card_lost")
    answer = sign_with_card(helper, login_id, card.path)
    _refused(answer, 429, "throttled")
    assert int(answer.headers["retry-after"]) > 0


def test_the_helper_reports_a_wrong_pin_to_the_page(
    client: TestClient, helper: TestClient, runtime: Runtime, login_id: str
) -> None:
    helper.get(f"/login/{login_id}/card")
    answer = helper.post(f"/login/{login_id}/card/abort", json={"reason": "pin_wrong", "tries_left": 2})
    assert answer.status_code == 204
    failure = client.get(f"/login/{login_id}/status").json()["last_failure"]
    assert failure == {"reason": "pin_wrong", "tries_left": 2}
    _refused(helper.post(f"/login/{login_id}/card/abort", json={"reason": "cancelled"}), 404, "login_unknown")
    assert _events(runtime) == [("failure", "pin_wrong")]


def test_malformed_evidence_is_a_400(helper: TestClient, login_id: str) -> None:
    helper.get(f"/login/{login_id}/card")
    _refused(helper.post(f"/login/{login_id}/card", json={"ef05": "!"}), 400, "invalid_request")


def test_another_portal_cannot_read_the_login_page(client: TestClient, runtime: Runtime, login_id: str) -> None:
    page = client.get(f"/login/{login_id}")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert client.get("/static/login.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/../config.py").status_code == 404
    assert register_client(runtime).client_id  # a second portal changes nothing for this login


def test_a_made_up_login_id_writes_no_audit_row(
    helper: TestClient, runtime: Runtime, login_id: str, tmp_path: Path
) -> None:
    card = issue(runtime, tmp_path, generation=3)
    body = card_body(helper, login_id, card.path)
    for made_up in ("A" * 32, "x" * 40):
        _refused(helper.post(f"/login/{made_up}/card", json=body), 404, "login_unknown")
    assert _events(runtime) == []  # an unauthenticated caller cannot fill the audit log
