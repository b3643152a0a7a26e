"""Enrolling, listing and revoking e-cards through /v1/ecards, on both backends."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from authsvc.audit.models import AuditEvent
from authsvc.database import unit_of_work
from authsvc.ecard.models import Ecard
from authsvc.registry import repository as registry_repository
from authsvc.registry import service as registry
from authsvc.runtime import Runtime
from authsvc.tokens import assurance
from card import ecard_protocol as protocol
from card.request_signing import b64url
from tests.fixtures.oidc import RegisteredClient, register_client
from tests.integration.ecard.support import (
    Citizen,
    app_client,
    bearer,
    citizen,
    enrol,
    enrol_body,
    new_key,
    refused,
    token,
)
from tests.integration.sso import authorize, login_id_of, query_of, request_for, sign_with_card


@pytest.fixture
def app(runtime: Runtime) -> RegisteredClient:
    return app_client(runtime)


@pytest.fixture
def zhang(runtime: Runtime, tmp_path: Path) -> Citizen:
    return citizen(runtime, tmp_path, generation=3)


@pytest.fixture
def li(runtime: Runtime, tmp_path: Path) -> Citizen:
    return citizen(runtime, tmp_path, generation=2)


@pytest.fixture
def access(runtime: Runtime, app: RegisteredClient, zhang: Citizen) -> str:
    return token(runtime, app, zhang.subject)


def _rows(runtime: Runtime) -> int:
    with unit_of_work(runtime.sessions) as db:
        return int(db.scalar(select(func.count(Ecard.id))) or 0)


def _events(runtime: Runtime, event: str) -> list[tuple[str, str | None]]:
    with unit_of_work(runtime.sessions) as db:
        query = select(AuditEvent).where(AuditEvent.event == event).order_by(AuditEvent.id)
        return [(e.outcome, e.reason) for e in db.scalars(query)]


def test_enrol_list_and_revoke(client: TestClient, runtime: Runtime, access: str, zhang: Citizen) -> None:
    key = new_key()
    answer = client.post("/v1/ecards", json=enrol_body(client, access, key), headers=bearer(access))
    assert answer.status_code == 201, answer.text
    ecard = answer.json()
    assert ecard["status"] == "active" and ecard["device_name"] == "张伟的手机"
    assert ecard["jkt"] == protocol.thumbprint(protocol.public_jwk(key.public_key()))
    assert ecard["card"] != zhang.card.card_number and ecard["card"][-3:] == zhang.card.card_number[-3:]
    listed = client.get("/v1/ecards", headers=bearer(access)).json()["ecards"]
    assert [e["id"] for e in listed] == [ecard["id"]]
    revoked = client.delete(f"/v1/ecards/{ecard['id']}", headers=bearer(access))
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert revoked.json()["revoked_reason"] == "holder_revoked"
    assert client.get("/v1/ecards", headers=bearer(access)).json()["ecards"][0]["status"] == "revoked"
    assert _events(runtime, "ecard_enrolled") == [("success", None)]
    assert _events(runtime, "ecard_revoked") == [("success", "holder_revoked")]


def test_the_app_is_a_public_native_client_with_any_loopback_port(runtime: Runtime, app: RegisteredClient) -> None:
    from authsvc.clients import service as clients

    with unit_of_work(runtime.sessions) as db:
        row = clients.get(db, app.client_id)
        assert row is not None
        assert clients.redirect_uri_registered(row, "http://127.0.0.1:51234/callback")
        assert clients.redirect_uri_registered(row, "http://127.0.0.1/callback")
        assert not clients.redirect_uri_registered(row, "http://127.0.0.1:51234/other")
        assert not clients.redirect_uri_registered(row, "http://localhost:51234/callback")
        assert not clients.redirect_uri_registered(row, "https://127.0.0.1:51234/callback")
        assert not clients.redirect_uri_registered(row, "http://evil@127.0.0.1:51234/callback")


def test_a_session_signs_the_app_in_only_with_the_citizen_at_the_login_page(
    client: TestClient, runtime: Runtime, app: RegisteredClient, zhang: Citizen
) -> None:
    # Any program on the device can name the app's client_id with a loopback redirect (RFC 8252 §8.6): a browser
    # session, however recent and high, never hands it a code by itself, or it could enrol a key of its own.
    portal = register_client(runtime, name="社保查询", acr_values=list(assurance.LEVELS))
    login_id = login_id_of(authorize(client, request_for(portal, acr_values=assurance.SUBSTANTIAL)))
    assert sign_with_card(TestClient(client.app), login_id, zhang.card.path).status_code == 200
    assert "code" in query_of(client.get(f"/login/{login_id}/continue", follow_redirects=False).headers["location"])
    assert "code" in query_of(authorize(client, request_for(portal, acr_values=assurance.LOW)).headers["location"])
    native = {"redirect_uri": "http://127.0.0.1:50001/callback", "scope": "openid ecard"}
    login_id_of(authorize(client, request_for(app, acr_values=assurance.LOW, **native)))  # the login page
    refused = query_of(authorize(client, request_for(app, prompt="none", **native)).headers["location"])
    assert refused["error"] == "login_required" and "code" not in refused


@pytest.mark.parametrize(
    ("acr", "age", "why"),
    [
        (assurance.SUBSTANTIAL, 0, "a higher authentication level is required"),
        (assurance.LOW, 0, "a higher authentication level is required"),
        (assurance.HIGH, 3600, "a more recent authentication is required"),
    ],
)
def test_enrolment_needs_a_recent_login_at_the_highest_level(
    client: TestClient, runtime: Runtime, app: RegisteredClient, zhang: Citizen, acr: str, age: int, why: str
) -> None:
    access = token(runtime, app, zhang.subject, acr=acr, amr=["sc", "pin", "mfa"], age=age)
    for path in ("/v1/ecards/enrolment-challenge", "/v1/ecards"):
        answer = client.post(path, json={}, headers=bearer(access))
        refused(answer, 401, "insufficient_user_authentication")
        challenge = answer.headers["www-authenticate"]
        assert 'error="insufficient_user_authentication"' in challenge and why in challenge
        assert f'acr_values="{assurance.HIGH}"' in challenge and 'max_age="600"' in challenge
    # Listing and revoking one's own e-cards need no particular level.
    assert client.get("/v1/ecards", headers=bearer(access)).json() == {"ecards": []}
    assert _rows(runtime) == 0


def test_the_ecard_scope_and_a_token_are_required(
    client: TestClient, runtime: Runtime, app: RegisteredClient, zhang: Citizen
) -> None:
    refused(client.post("/v1/ecards/enrolment-challenge"), 401, "token_required")
    refused(client.get("/v1/ecards", headers=bearer("not-a-token")), 401, "invalid_token")
    no_scope = token(runtime, app, zhang.subject, scope="openid")
    refused(client.post("/v1/ecards/enrolment-challenge", headers=bearer(no_scope)), 403, "insufficient_scope")
    refused(client.get("/v1/ecards", headers=bearer(no_scope)), 403, "insufficient_scope")


def test_a_challenge_is_single_use_and_bound_to_its_person(
    client: TestClient, runtime: Runtime, app: RegisteredClient, access: str, li: Citizen
) -> None:
    key = new_key()
    body = enrol_body(client, access, key)
    assert client.post("/v1/ecards", json=body, headers=bearer(access)).status_code == 201
    again = enrol_body(client, access, new_key(), challenge=body["challenge"])
    refused(client.post("/v1/ecards", json=again, headers=bearer(access)), 400, "challenge_invalid")
    # Li's token with Zhang's challenge (and a signature that is right for it): refused, and the challenge is spent.
    li_access = token(runtime, app, li.subject)
    zhang_body = enrol_body(client, access, new_key())
    refused(client.post("/v1/ecards", json=zhang_body, headers=bearer(li_access)), 400, "challenge_invalid")
    refused(client.post("/v1/ecards", json=zhang_body, headers=bearer(access)), 400, "challenge_invalid")
    assert _rows(runtime) == 1
    assert _events(runtime, "ecard_enrolled")[1:] == [("failure", "challenge_invalid")] * 3


def _jwk_of(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    size = (key.curve.key_size + 7) // 8
    return {
        "kty": "EC",
        "crv": {256: "P-256", 384: "P-384", 521: "P-521"}.get(key.curve.key_size, "secp256k1"),
        "x": b64url(numbers.x.to_bytes(size, "big")),
        "y": b64url(numbers.y.to_bytes(size, "big")),
    }


@pytest.mark.parametrize(
    "bad_key",
    [
        _jwk_of(ec.generate_private_key(ec.SECP384R1())),
        {**_jwk_of(ec.generate_private_key(ec.SECP256K1())), "crv": "secp256k1"},
        {**_jwk_of(ec.generate_private_key(ec.SECP256R1())), "y": b64url((7).to_bytes(32, "big"))},  # off the curve
        {**_jwk_of(ec.generate_private_key(ec.SECP256R1())), "d": "AAAA"},
        {"kty": "OKP", "crv": "Ed25519", "x": b64url(bytes(32))},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
    ],
)
def test_only_p256_public_keys_are_enrolled(
    client: TestClient, runtime: Runtime, access: str, bad_key: dict[str, str]
) -> None:
    body = enrol_body(client, access, new_key(), public_key=bad_key)
    refused(client.post("/v1/ecards", json=body, headers=bearer(access)), 400, "invalid_public_key")
    assert _rows(runtime) == 0


def test_the_signature_must_prove_the_key(client: TestClient, runtime: Runtime, access: str) -> None:
    key, other = new_key(), new_key()
    body = enrol_body(client, access, key)
    jwk = protocol.public_jwk(key.public_key())
    # Signed by another key; then by the right key but for another service (issuer) — neither proves possession here.
    forged = protocol.sign(
        other,
        protocol.enrol_message(
            issuer="http://testserver", challenge=body["challenge"], key_thumbprint=protocol.thumbprint(jwk)
        ),
    )
    refused(
        client.post("/v1/ecards", json={**body, "signature": forged}, headers=bearer(access)), 400, "signature_invalid"
    )
    body = enrol_body(client, access, key)
    elsewhere = protocol.sign(
        key,
        protocol.enrol_message(
            issuer="https://phish.example", challenge=body["challenge"], key_thumbprint=protocol.thumbprint(jwk)
        ),
    )
    refused(
        client.post("/v1/ecards", json={**body, "signature": elsewhere}, headers=bearer(access)),
        400,
        "signature_invalid",
    )
    assert _rows(runtime) == 0


def test_a_key_is_enrolled_once(
    client: TestClient, runtime: Runtime, app: RegisteredClient, access: str, li: Citizen
) -> None:
    key = new_key()
    enrol(client, access, key)
    refused(
        client.post("/v1/ecards", json=enrol_body(client, access, key), headers=bearer(access)), 409, "key_enrolled"
    )
    li_access = token(runtime, app, li.subject)
    refused(
        client.post("/v1/ecards", json=enrol_body(client, li_access, key), headers=bearer(li_access)),
        409,
        "key_enrolled",
    )
    assert _rows(runtime) == 1


def test_at_most_n_active_ecards_per_person(client: TestClient, runtime: Runtime, access: str) -> None:
    limit = runtime.settings.ecard_max_active
    devices = [enrol(client, access) for _ in range(limit)]
    refused(
        client.post("/v1/ecards", json=enrol_body(client, access, new_key()), headers=bearer(access)),
        409,
        "too_many_ecards",
    )
    assert client.delete(f"/v1/ecards/{devices[0].ecard_id}", headers=bearer(access)).status_code == 200
    enrol(client, access)
    assert _rows(runtime) == limit + 1


def test_citizens_see_and_revoke_only_their_own(
    client: TestClient, runtime: Runtime, app: RegisteredClient, access: str, li: Citizen
) -> None:
    mine = enrol(client, access)
    li_access = token(runtime, app, li.subject)
    theirs = enrol(client, li_access)
    assert [e["id"] for e in client.get("/v1/ecards", headers=bearer(access)).json()["ecards"]] == [mine.ecard_id]
    assert [e["id"] for e in client.get("/v1/ecards", headers=bearer(li_access)).json()["ecards"]] == [theirs.ecard_id]
    # Somebody else's e-card and one that does not exist are the same 404; nothing changes.
    refused(client.delete(f"/v1/ecards/{theirs.ecard_id}", headers=bearer(access)), 404, "ecard_unknown")
    refused(client.delete("/v1/ecards/AAAAAAAAAAAAAAAAAAAAAA", headers=bearer(access)), 404, "ecard_unknown")
    refused(client.delete("/v1/ecards/bad%20id", headers=bearer(access)), 404, "ecard_unknown")
    assert client.get("/v1/ecards", headers=bearer(li_access)).json()["ecards"][0]["status"] == "active"


def test_a_lost_card_revokes_its_ecards_and_blocks_enrolment(
    client: TestClient, runtime: Runtime, access: str, zhang: Citizen
) -> None:
    devices = [enrol(client, access) for _ in range(2)]
    with unit_of_work(runtime.sessions) as db:
        registry.set_card_status(db, zhang.card.card_number, "reported_lost")
    listed = client.get("/v1/ecards", headers=bearer(access)).json()["ecards"]
    assert {(e["id"], e["status"], e["revoked_reason"]) for e in listed} == {
        (d.ecard_id, "revoked", "card_reported_lost") for d in devices
    }
    assert _events(runtime, "ecard_revoked") == [("success", "card_reported_lost")] * 2
    refused(
        client.post("/v1/ecards", json=enrol_body(client, access, new_key()), headers=bearer(access)),
        409,
        "no_active_card",
    )


def test_an_expired_card_enrols_no_ecard(client: TestClient, runtime: Runtime, access: str, zhang: Citizen) -> None:
    with unit_of_work(runtime.sessions) as db:
        card = registry_repository.card_by_number(db, zhang.card.card_number)
        assert card is not None
        card.expires_on = date.today() - timedelta(days=1)
    refused(
        client.post("/v1/ecards", json=enrol_body(client, access, new_key()), headers=bearer(access)),
        409,
        "no_active_card",
    )
    assert _rows(runtime) == 0


def test_a_frozen_card_keeps_its_ecards(client: TestClient, runtime: Runtime, access: str, zhang: Citizen) -> None:
    enrol(client, access)
    with unit_of_work(runtime.sessions) as db:
        registry.set_card_status(db, zhang.card.card_number, "frozen")
    assert client.get("/v1/ecards", headers=bearer(access)).json()["ecards"][0]["status"] == "active"
    with unit_of_work(runtime.sessions) as db:
        registry.set_card_status(db, zhang.card.card_number, "cancelled")
    listed = client.get("/v1/ecards", headers=bearer(access)).json()["ecards"]
    assert listed[0]["status"] == "revoked" and listed[0]["revoked_reason"] == "card_cancelled"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_enrolments_are_4xx_and_write_nothing(
    client: TestClient, runtime: Runtime, access: str, data: st.DataObject
) -> None:
    body = enrol_body(client, access, new_key())
    field = data.draw(st.sampled_from([*body, "extra"]))
    mutated = {**body, field: data.draw(_json)}
    if data.draw(st.booleans()):
        mutated.pop(data.draw(st.sampled_from(sorted(mutated))))
    raw = json.dumps(mutated) if data.draw(st.booleans()) else data.draw(st.text(max_size=40))
    answer = client.post("/v1/ecards", content=raw, headers={**bearer(access), "content-type": "application/json"})
    if answer.status_code == 201:  # a mutation that changed nothing that matters (the device name, say)
        client.delete(f"/v1/ecards/{answer.json()['id']}", headers=bearer(access))
        return
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    with unit_of_work(runtime.sessions) as db:
        assert db.scalar(select(func.count(Ecard.id)).where(Ecard.status == "active")) == 0
