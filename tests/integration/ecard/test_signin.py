"""Signing in with the e-card by QR code: the page's QR, the app's scan and approval, relay defences, revocation,
throttling, factors adding up with the card; on both backends."""

from __future__ import annotations

import json
import threading
from datetime import date, timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from authsvc.audit.models import AuditEvent
from authsvc.clients.models import AuthMethod
from authsvc.database import unit_of_work
from authsvc.registry import repository as registry_repository
from authsvc.registry import service as registry
from authsvc.runtime import Runtime
from authsvc.tokens import assurance
from tests.fixtures.oidc import RegisteredClient, basic_auth, register_client
from tests.integration.ecard.support import (
    Citizen,
    Device,
    app_client,
    approve,
    bearer,
    citizen,
    enrol,
    qr,
    refused,
    scan,
    sign_in,
    signature,
    start_login,
    token,
)
from tests.integration.sso import query_of, request_for, sign_with_card

LEVELS = [assurance.LOW, assurance.SUBSTANTIAL, assurance.HIGH]


@pytest.fixture
def portal(runtime: Runtime) -> RegisteredClient:
    return register_client(
        runtime, name="社保查询", auth_method=AuthMethod.CLIENT_SECRET_BASIC, acr_values=LEVELS, scopes=["openid"]
    )


@pytest.fixture
def other_portal(runtime: Runtime) -> RegisteredClient:
    return register_client(runtime, name="其他门户", acr_values=LEVELS)


@pytest.fixture
def zhang(runtime: Runtime, tmp_path: Path) -> Citizen:
    return citizen(runtime, tmp_path, generation=3)


@pytest.fixture
def phone(client: TestClient, runtime: Runtime, zhang: Citizen) -> Device:
    return enrol(client, token(runtime, app_client(runtime), zhang.subject))


@pytest.fixture
def face_offered(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment with a face check (a vendor configured): the e-card then leads to substantial (with the face),
    so the policy offers it there. These tests stop before any face check starts."""
    monkeypatch.setattr(runtime.liveness, "available", lambda: True)


@pytest.fixture
def app(client: TestClient) -> TestClient:
    """The phone: another HTTP client, without the browser's cookies."""
    return TestClient(client.app)


def _events(runtime: Runtime) -> list[tuple[str, str | None]]:
    with unit_of_work(runtime.sessions) as db:
        query = select(AuditEvent).where(AuditEvent.event == "ecard_signin").order_by(AuditEvent.id)
        return [(e.outcome, e.reason) for e in db.scalars(query)]


def test_qr_sign_in_completes_the_login_at_level_low(
    client: TestClient, app: TestClient, runtime: Runtime, portal: RegisteredClient, zhang: Citizen, phone: Device
) -> None:
    request = request_for(portal, acr_values=assurance.LOW)
    from tests.integration.sso import authorize, login_id_of

    login_id = login_id_of(authorize(client, request))
    shown = client.get(f"/login/{login_id}/ecard").json()
    assert shown["url"].startswith("http://testserver/ecard/scan?") and shown["qr_svg"].startswith("<svg")
    assert 0 < shown["expires_in"] <= runtime.settings.ecard_qr_ttl
    scanned = scan(app, client, login_id)
    assert scanned["portal"] == "社保查询" and scanned["client_id"] == portal.client_id
    assert scanned["acr"] == assurance.LOW and scanned["origin"] == "http://testserver"
    answer = approve(app, phone, login_id, signature(phone, login_id, scanned))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "done", "acr": assurance.LOW, "amr": ["hwk"]}
    assert client.get(f"/login/{login_id}/status").json() == {"status": "done"}
    back = client.get(f"/login/{login_id}/continue", follow_redirects=False)
    code = query_of(back.headers["location"])["code"]
    assert portal.secret is not None
    tokens = client.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": request.params["redirect_uri"],
            "code_verifier": request.verifier,
        },
        headers={"Authorization": basic_auth(portal.client_id, portal.secret)},
    ).json()
    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["acr"] == assurance.LOW and claims["amr"] == ["hwk"] and claims["sub"] == zhang.subject
    assert _events(runtime) == [("success", None)]
    listed = client.get("/v1/ecards", headers=bearer(token(runtime, app_client(runtime), zhang.subject)))
    assert listed.json()["ecards"][0]["last_used_at"] is not None


def test_only_the_browser_that_started_the_login_gets_a_qr_code(
    client: TestClient, app: TestClient, portal: RegisteredClient
) -> None:
    login_id = start_login(client, portal, acr_values=assurance.LOW)
    refused(app.get(f"/login/{login_id}/ecard"), 404, "login_unknown")
    refused(client.get("/login/no-such-login-00000000/ecard"), 404, "login_unknown")


def test_no_qr_code_where_the_ecard_adds_nothing(
    client: TestClient,
    app: TestClient,
    runtime: Runtime,
    portal: RegisteredClient,
    phone: Device,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    high = start_login(client, portal, acr_values=assurance.HIGH)  # card + PIN + face: an e-card is none of them
    refused(client.get(f"/login/{high}/ecard"), 409, "method_not_offered")
    assert client.get(f"/login/{high}/status").json()["missing"] == []  # out of reach without a face check
    # Without a face check here, the e-card cannot lead to substantial (card + PIN must, and alone does).
    substantial = start_login(client, portal, acr_values=assurance.SUBSTANTIAL)
    refused(client.get(f"/login/{substantial}/ecard"), 409, "method_not_offered")
    assert client.get(f"/login/{substantial}/status").json()["missing"] == ["card"]
    monkeypatch.setattr(runtime.liveness, "available", lambda: True)  # with one, the e-card then a face
    assert client.get(f"/login/{substantial}/status").json()["missing"] == ["card", "ecard"]
    assert sign_in(app, client, phone, substantial).json()["status"] == "partial"
    refused(client.get(f"/login/{substantial}/ecard"), 409, "method_not_offered")  # proven already


def test_a_qr_token_is_single_use_and_a_new_one_voids_the_old(
    client: TestClient, app: TestClient, portal: RegisteredClient, phone: Device
) -> None:
    login_id = start_login(client, portal, acr_values=assurance.LOW)
    _, old = qr(client, login_id)
    qr(client, login_id)  # the page rotated its code
    refused(app.post("/v1/ecard/sign-ins/scan", json={"login_id": login_id, "qr_token": old}), 404, "qr_invalid")
    _, token_ = qr(client, login_id)
    assert app.post("/v1/ecard/sign-ins/scan", json={"login_id": login_id, "qr_token": token_}).status_code == 200
    refused(app.post("/v1/ecard/sign-ins/scan", json={"login_id": login_id, "qr_token": token_}), 404, "qr_invalid")
    refused(app.post("/v1/ecard/sign-ins/scan", json={"login_id": login_id, "qr_token": "x"}), 400, "invalid_request")
    # A wrong guess does not void the code the page shows.
    shown_url = client.get(f"/login/{login_id}/ecard").json()["url"]
    _, current = qr(client, login_id)
    refused(app.post("/v1/ecard/sign-ins/scan", json={"login_id": login_id, "qr_token": "G" * 32}), 404, "qr_invalid")
    assert app.post("/v1/ecard/sign-ins/scan", json={"login_id": login_id, "qr_token": current}).status_code == 200
    # Opened by a phone without the app, the code's URL says what to do, and does nothing.
    landing = app.get(shown_url.removeprefix("http://testserver"))
    assert landing.status_code == 200 and "social security card app" in landing.text


def test_a_signature_for_another_login_portal_or_origin_is_refused(
    client: TestClient,
    app: TestClient,
    runtime: Runtime,
    portal: RegisteredClient,
    other_portal: RegisteredClient,
    phone: Device,
) -> None:
    login_id = start_login(client, portal, acr_values=assurance.LOW)
    # A phishing page started its own login (at another portal, or the same) and relays its QR code; whatever the
    # app signed for that login, portal or origin does not complete this one.
    phished = start_login(TestClient(client.app), other_portal, acr_values=assurance.LOW)
    cases = [
        {"login_id": phished},
        {"client_id": other_portal.client_id},
        {"origin": "https://sscard-login.example"},
        {"ecard_id": "AAAAAAAAAAAAAAAAAAAAAA"},
    ]
    for fields in cases:
        scanned = scan(app, client, login_id)
        refused(approve(app, phone, login_id, signature(phone, login_id, scanned, **fields)), 422, "signature_invalid")
    assert client.get(f"/login/{login_id}/status").json()["last_failure"] == {"reason": "signature_invalid"}
    assert sign_in(app, client, phone, login_id).status_code == 200
    assert _events(runtime) == [("failure", "signature_invalid")] * 4 + [("success", None)]


def test_a_signature_over_a_replaced_or_spent_challenge_is_refused(
    client: TestClient, app: TestClient, portal: RegisteredClient, phone: Device
) -> None:
    login_id = start_login(client, portal, acr_values=assurance.LOW)
    scanned = scan(app, client, login_id)
    good = signature(phone, login_id, scanned)
    scan(app, client, login_id)  # a newer scan replaced the challenge
    refused(approve(app, phone, login_id, good), 422, "signature_invalid")
    refused(approve(app, phone, login_id, good), 409, "challenge_unknown")  # spent by the failure
    assert sign_in(app, client, phone, login_id).status_code == 200


def test_unknown_logins_and_ecards(
    client: TestClient, app: TestClient, portal: RegisteredClient, phone: Device
) -> None:
    login_id = start_login(client, portal, acr_values=assurance.LOW)
    scanned = scan(app, client, login_id)
    refused(approve(app, phone, "no-such-login-00000000", signature(phone, login_id, scanned)), 404, "login_unknown")
    stranger = Device(phone.key, "BBBBBBBBBBBBBBBBBBBBBB")
    refused(approve(app, stranger, login_id, signature(stranger, login_id, scanned)), 422, "ecard_unknown")
    refused(app.post(f"/v1/ecard/sign-ins/{login_id}", json={"ecard_id": phone.ecard_id}), 400, "invalid_request")
    refused(app.post(f"/v1/ecard/sign-ins/{login_id}", content=b"[]"), 400, "invalid_request")


def test_a_revoked_ecard_is_refused(
    client: TestClient, app: TestClient, runtime: Runtime, portal: RegisteredClient, zhang: Citizen, phone: Device
) -> None:
    access = token(runtime, app_client(runtime), zhang.subject)
    assert client.delete(f"/v1/ecards/{phone.ecard_id}", headers=bearer(access)).status_code == 200
    login_id = start_login(client, portal, acr_values=assurance.LOW)
    refused(sign_in(app, client, phone, login_id), 422, "ecard_revoked")
    assert client.get(f"/login/{login_id}/status").json()["status"] == "pending"


@pytest.mark.parametrize(("status", "reason"), [("reported_lost", "ecard_revoked"), ("frozen", "card_not_active")])
def test_the_physical_card_must_stand(
    client: TestClient,
    app: TestClient,
    runtime: Runtime,
    portal: RegisteredClient,
    zhang: Citizen,
    phone: Device,
    status: str,
    reason: str,
) -> None:
    with unit_of_work(runtime.sessions) as db:
        registry.set_card_status(db, zhang.card.card_number, status)
    login_id = start_login(client, portal, acr_values=assurance.LOW)
    refused(sign_in(app, client, phone, login_id), 422, reason)


def test_the_ecard_of_an_expired_card_signs_in_nowhere(
    client: TestClient, app: TestClient, runtime: Runtime, portal: RegisteredClient, zhang: Citizen, phone: Device
) -> None:
    # The e-card stands on the physical card it was enrolled with: once that card has expired (still "active" in
    # the registry until it is replaced) the card itself is refused (card_expired), and so is its e-card.
    with unit_of_work(runtime.sessions) as db:
        card = registry_repository.card_by_number(db, zhang.card.card_number)
        assert card is not None
        card.expires_on = date.today() - timedelta(days=1)
    login_id = start_login(client, portal, acr_values=assurance.LOW)
    refused(sign_in(app, client, phone, login_id), 422, "card_expired")
    assert client.get(f"/login/{login_id}/status").json()["status"] == "pending"
    assert _events(runtime) == [("failure", "card_expired")]


def test_failed_signatures_are_throttled_per_ecard(
    client: TestClient, app: TestClient, runtime: Runtime, portal: RegisteredClient, phone: Device
) -> None:
    login_id = start_login(client, portal, acr_values=assurance.LOW)
    for _ in range(runtime.settings.throttle_card_failures):
        scanned = scan(app, client, login_id)
        refused(
            approve(app, phone, login_id, signature(phone, login_id, scanned, client_id="x")), 422, "signature_invalid"
        )
    answer = sign_in(app, client, phone, login_id)  # even a good one, until the window ends
    refused(answer, 429, "throttled")
    assert int(answer.headers["retry-after"]) > 0
    assert client.get(f"/login/{login_id}/status").json()["last_failure"]["reason"] == "throttled"


@pytest.mark.usefixtures("face_offered")
def test_ecard_and_card_add_up_to_substantial(
    client: TestClient, app: TestClient, runtime: Runtime, portal: RegisteredClient, zhang: Citizen, phone: Device
) -> None:
    login_id = start_login(client, portal, acr_values=assurance.SUBSTANTIAL)
    answer = sign_in(app, client, phone, login_id)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "partial" and "card" in answer.json()["missing"]
    status = client.get(f"/login/{login_id}/status").json()
    assert status["status"] == "pending" and status["reached"] == assurance.LOW
    assert sign_with_card(TestClient(client.app), login_id, zhang.card.path).status_code == 200
    assert client.get(f"/login/{login_id}/status").json() == {"status": "done"}


@pytest.mark.usefixtures("face_offered")
def test_another_persons_ecard_or_card_cannot_add_to_a_login(
    client: TestClient, app: TestClient, runtime: Runtime, portal: RegisteredClient, tmp_path: Path, phone: Device
) -> None:
    from authsvc.login import pending

    li = citizen(runtime, tmp_path, generation=2)
    # Zhang's e-card first: Li's card cannot add to it.
    login_id = start_login(client, portal, acr_values=assurance.SUBSTANTIAL)
    assert sign_in(app, client, phone, login_id).json()["status"] == "partial"
    answer = sign_with_card(TestClient(client.app), login_id, li.card.path)
    assert answer.status_code == 422 and answer.json()["reason"] == "subject_mismatch"
    # Zhang's phone scanned, then Li's card (say, without its PIN) identified Li first: the approval cannot add.
    login_id = start_login(client, portal, acr_values=assurance.SUBSTANTIAL)
    scanned = scan(app, client, login_id)
    pending.complete(runtime.store, login_id, subject=li.subject, amr=["sc"], method="card")
    refused(approve(app, phone, login_id, signature(phone, login_id, scanned)), 422, "subject_mismatch")
    assert client.get(f"/login/{login_id}/status").json()["status"] == "pending"


def test_a_completed_login_is_not_completed_again(
    client: TestClient, app: TestClient, portal: RegisteredClient, phone: Device
) -> None:
    login_id = start_login(client, portal, acr_values=assurance.LOW)
    assert sign_in(app, client, phone, login_id).status_code == 200
    refused(app.post("/v1/ecard/sign-ins/scan", json={"login_id": login_id, "qr_token": "A" * 32}), 404, "qr_invalid")
    shown, token_ = qr(client, login_id)
    scanned = app.post("/v1/ecard/sign-ins/scan", json={"login_id": shown, "qr_token": token_}).json()
    refused(approve(app, phone, login_id, signature(phone, login_id, scanned)), 409, "login_completed")


def test_concurrent_approvals_complete_once(live_server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = live_server_factory()
    rt = server.runtime
    holder = citizen(rt, tmp_path, generation=3)
    portal = register_client(rt, name="社保查询", acr_values=LEVELS)
    with httpx.Client(base_url=server.url) as browser, httpx.Client(base_url=server.url) as phone_http:
        phone = enrol(phone_http, token(rt, app_client(rt), holder.subject), issuer=server.url)
        located = browser.get("/authorize", params=request_for(portal, acr_values=assurance.LOW).params)
        login_id = httpx.URL(located.headers["location"]).path.removeprefix("/login/")
        scanned = scan(phone_http, browser, login_id)
        signed = signature(phone, login_id, scanned, origin=server.url)
        barrier = threading.Barrier(4)
        results: list[int] = []

        def approve_once() -> None:
            with httpx.Client(base_url=server.url) as http:
                barrier.wait()
                results.append(approve(http, phone, login_id, signed).status_code)

        threads = [threading.Thread(target=approve_once) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [200, 409, 409, 409]
        assert browser.get(f"/login/{login_id}/status").json() == {"status": "done"}


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(["scan", "approve"]),
    body=st.one_of(
        st.binary(max_size=60),
        _json.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries({"login_id": _json, "qr_token": _json, "ecard_id": _json, "signature": _json}).map(
            lambda v: json.dumps(v).encode()
        ),
    ),
)
def test_malformed_sign_in_bodies_are_4xx(
    client: TestClient, app: TestClient, portal: RegisteredClient, phone: Device, path: str, body: bytes
) -> None:
    login_id = start_login(client, portal, acr_values=assurance.LOW)
    target = "/v1/ecard/sign-ins/scan" if path == "scan" else f"/v1/ecard/sign-ins/{login_id}"
    answer = app.post(target, content=body, headers={"content-type": "application/json"})
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert client.get(f"/login/{login_id}/status").json()["status"] == "pending"
