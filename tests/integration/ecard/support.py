"""Shared by the e-card integration tests: the app's public client, a citizen with a card, access tokens at a level,
an enrolled device key, and the app's side of a QR sign-in (scan, sign, approve)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from authsvc.database import unit_of_work
from authsvc.ecard import app_client as app_registration
from authsvc.oauth import grants
from authsvc.registry import repository as registry
from authsvc.runtime import Runtime
from authsvc.tokens import assurance, issuing
from card import ecard_protocol as protocol
from tests.fixtures.oidc import RegisteredClient, register_client
from tests.fixtures.service import Issued, issue
from tests.integration.sso import authorize, login_id_of, request_for

ISSUER = "http://testserver"
ORIGIN = "http://testserver"
HIGH_AMR = ["sc", "hwk", "pin", "face", "mfa"]
APP_REDIRECT = app_registration.REDIRECT_URI
Client = TestClient | httpx.Client  # the in-process app, or a live server's


def app_client(runtime: Runtime) -> RegisteredClient:
    """The e-card app: an RFC 8252 public native client with a loopback redirect (any port)."""
    from dataclasses import asdict

    return register_client(runtime, **asdict(app_registration.spec()))


@dataclass
class Citizen:
    subject: str
    card: Issued


def citizen(runtime: Runtime, tmp: Path, generation: int = 3, **kwargs: Any) -> Citizen:
    card = issue(runtime, tmp, generation=generation, **kwargs)
    with unit_of_work(runtime.sessions) as db:
        holder = registry.holder_by_ssn(db, card.ssn)
        assert holder is not None
        return Citizen(holder.subject, card)


def token(
    runtime: Runtime,
    app: RegisteredClient,
    subject: str,
    *,
    acr: str = assurance.HIGH,
    amr: list[str] | None = None,
    age: int = 0,
    scope: str = "openid ecard",
) -> str:
    """An access token of the app for `subject`, from a login at `acr` `age` seconds ago, with its grant."""
    auth = issuing.Authentication(subject=subject, auth_time=int(time.time()) - age, acr=acr, amr=amr or HIGH_AMR)
    with unit_of_work(runtime.sessions) as db:
        grant = grants.create(
            db,
            client_id=app.client_id,
            subject=subject,
            sid=None,
            scope=scope.split(),
            acr=acr,
            amr=auth.amr,
            auth_time=auth.auth_time,
            ttl=3600,
        )
        grant_id = grant.id
    s = runtime.settings
    value, _ = issuing.access_token(
        runtime.keyring,
        issuer=s.issuer,
        audience=s.access_token_audience,
        client_id=app.client_id,
        subject=subject,
        scope=scope,
        ttl=s.access_token_ttl,
        auth=auth,
        grant_id=grant_id,
    )
    return value


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def enrol_body(
    api: Client, access: str, key: ec.EllipticCurvePrivateKey, *, issuer: str = ISSUER, **overrides: Any
) -> dict[str, Any]:
    """What the app posts to enrol `key`: a fresh challenge, signed."""
    answer = api.post("/v1/ecards/enrolment-challenge", headers=bearer(access))
    assert answer.status_code == 200, answer.text
    challenge = answer.json()["challenge"]
    jwk = protocol.public_jwk(key.public_key())
    message = protocol.enrol_message(issuer=issuer, challenge=challenge, key_thumbprint=protocol.thumbprint(jwk))
    body = {
        "public_key": jwk,
        "device_name": "张伟的手机",
        "challenge": challenge,
        "signature": protocol.sign(key, message),
    }
    body.update(overrides)
    return body


@dataclass
class Device:
    key: ec.EllipticCurvePrivateKey
    ecard_id: str


def enrol(api: Client, access: str, key: ec.EllipticCurvePrivateKey | None = None, *, issuer: str = ISSUER) -> Device:
    key = key or new_key()
    answer = api.post("/v1/ecards", json=enrol_body(api, access, key, issuer=issuer), headers=bearer(access))
    assert answer.status_code == 201, answer.text
    return Device(key, answer.json()["id"])


def start_login(browser: TestClient, portal: RegisteredClient, **params: str) -> str:
    return login_id_of(authorize(browser, request_for(portal, **params)))


def qr(browser: Client, login_id: str) -> tuple[str, str]:
    """The page's QR code: (login id, token) as the app reads them from its URL."""
    from urllib.parse import parse_qs, urlsplit

    answer = browser.get(f"/login/{login_id}/ecard")
    assert answer.status_code == 200, answer.text
    query = parse_qs(urlsplit(answer.json()["url"]).query)
    return query["l"][0], query["t"][0]


def scan(app: Client, browser: Client, login_id: str) -> dict[str, Any]:
    shown, qr_token = qr(browser, login_id)
    answer = app.post("/v1/ecard/sign-ins/scan", json={"login_id": shown, "qr_token": qr_token})
    assert answer.status_code == 200, answer.text
    return answer.json()


def signature(device: Device, login: str, scanned: dict[str, Any], **fields: str) -> str:
    values = {
        "origin": ORIGIN,
        "login_id": login,
        "client_id": scanned["client_id"],
        "challenge": scanned["challenge"],
        "ecard_id": device.ecard_id,
    }
    values.update(fields)
    return protocol.sign(device.key, protocol.signin_message(**values))


def approve(app: Client, device: Device, login_id: str, sig: str):  # type: ignore[no-untyped-def]
    return app.post(f"/v1/ecard/sign-ins/{login_id}", json={"ecard_id": device.ecard_id, "signature": sig})


def sign_in(app: TestClient, browser: TestClient, device: Device, login_id: str):  # type: ignore[no-untyped-def]
    scanned = scan(app, browser, login_id)
    return approve(app, device, login_id, signature(device, login_id, scanned))


def refused(response, status: int, reason: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["reason"] == reason
