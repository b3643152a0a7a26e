"""The reference e-card client (card/ecard.py) against a fake service: the device key file, enrolment, the QR URL
rules (only the enrolled origin), what the citizen is shown before signing, and how refusals come back."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from card import ecard
from card import ecard_protocol as protocol
from card.kiosk import EXIT_REFUSED, EXIT_SERVICE, EXIT_USAGE

ISSUER = "https://id.example.gov.cn"
LOGIN = "L" * 32


class FakeService:
    """Enough of the service to check what the client signs: it verifies with the enrolled key."""

    def __init__(self) -> None:
        self.jwk: dict[str, str] | None = None
        self.calls: list[str] = []
        self.scan_answer: dict[str, Any] = {
            "login_id": LOGIN,
            "challenge": "C" * 43,
            "portal": "社保查询",
            "client_id": "portal-1",
            "acr": "urn:sscard:acr:low",
            "origin": ISSUER,
            "expires_in": 60,
        }
        self.approve_status = 200

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls.append(f"{request.method} {path}")
        body = json.loads(request.content) if request.content else {}
        if path == "/v1/ecards/enrolment-challenge":
            assert request.headers["authorization"] == "Bearer T"
            return httpx.Response(200, json={"challenge": "E" * 43, "issuer": ISSUER, "expires_in": 60})
        if path == "/v1/ecards" and request.method == "POST":
            key, jwk = protocol.parse_public_jwk(body["public_key"])
            message = protocol.enrol_message(issuer=ISSUER, challenge="E" * 43, key_thumbprint=protocol.thumbprint(jwk))
            assert protocol.verify(key, message, body["signature"])
            self.jwk = jwk
            return httpx.Response(201, json={"id": "ecard-000000000001", "status": "active"})
        if path == "/v1/ecard/sign-ins/scan":
            assert body == {"login_id": LOGIN, "qr_token": "tok"}
            return httpx.Response(200, json=self.scan_answer)
        if path == f"/v1/ecard/sign-ins/{LOGIN}":
            if self.approve_status != 200:
                problem = {"reason": "ecard_revoked", "detail": "this e-card has been revoked"}
                return httpx.Response(self.approve_status, json=problem)
            assert self.jwk is not None and body["ecard_id"] == "ecard-000000000001"
            key, _ = protocol.parse_public_jwk(self.jwk)
            message = protocol.signin_message(
                origin=ISSUER, login_id=LOGIN, client_id="portal-1", challenge="C" * 43, ecard_id=body["ecard_id"]
            )
            assert protocol.verify(key, message, body["signature"])
            return httpx.Response(200, json={"status": "done"})
        return httpx.Response(404, json={"reason": "not_found"})


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def enrolled(service: FakeService, tmp_path: Path) -> Path:
    key = tmp_path / "device.pem"
    ecard.enrol(ISSUER, key, "T", device_name="phone", transport=httpx.MockTransport(service))
    return key


def test_the_device_key_is_created_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "device.pem"
    key = ecard.load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ecard.load_or_create_key(path).private_numbers() == key.private_numbers()
    os.chmod(path, 0o644)
    with pytest.raises(ecard.EcardError) as refused:
        ecard.load_or_create_key(path)
    assert refused.value.reason == "key_exposed" and refused.value.exit_code == EXIT_USAGE
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    bad.chmod(0o600)
    with pytest.raises(ecard.EcardError, match="not a PEM"):
        ecard.load_or_create_key(bad)


def test_enrolment_signs_the_challenge_and_saves_the_state(service: FakeService, enrolled: Path) -> None:
    state = ecard.load_state(enrolled)
    assert state == ecard.State(issuer=ISSUER, ecard_id="ecard-000000000001")
    assert stat.S_IMODE(ecard.state_path(enrolled).stat().st_mode) == 0o600
    assert service.calls == ["POST /v1/ecards/enrolment-challenge", "POST /v1/ecards"]


def test_not_enrolled_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ecard.EcardError) as refused:
        ecard.sign_in(f"{ISSUER}/ecard/scan?l={LOGIN}&t=tok", tmp_path / "k.pem", confirm=lambda _: True)
    assert refused.value.reason == "not_enrolled" and refused.value.exit_code == EXIT_USAGE


def test_sign_in_shows_the_portal_then_signs(service: FakeService, enrolled: Path) -> None:
    shown: list[dict[str, Any]] = []

    def confirm(scanned: dict[str, Any]) -> bool:
        shown.append(scanned)
        return True

    url = f"{ISSUER}/ecard/scan?l={LOGIN}&t=tok"
    answer = ecard.sign_in(url, enrolled, confirm=confirm, transport=httpx.MockTransport(service))
    assert answer == {"status": "done"}
    assert shown[0]["portal"] == "社保查询" and shown[0]["client_id"] == "portal-1"


def test_declining_sends_no_signature(service: FakeService, enrolled: Path) -> None:
    url = f"{ISSUER}/ecard/scan?l={LOGIN}&t=tok"
    with pytest.raises(ecard.EcardError) as refused:
        ecard.sign_in(url, enrolled, confirm=lambda _: False, transport=httpx.MockTransport(service))
    assert refused.value.reason == "declined"
    assert service.calls[-1] == "POST /v1/ecard/sign-ins/scan"


@pytest.mark.parametrize(
    "url",
    [
        f"https://id.example.gov.cn.phish.example/ecard/scan?l={LOGIN}&t=tok",  # a look-alike host
        f"https://phish.example/ecard/scan?l={LOGIN}&t=tok",
        f"http://id.example.gov.cn/ecard/scan?l={LOGIN}&t=tok",  # another scheme: another origin
        f"https://id.example.gov.cn:8443/ecard/scan?l={LOGIN}&t=tok",
        f"https://id.example.gov.cn/other?l={LOGIN}&t=tok",
        "https://id.example.gov.cn/ecard/scan?l=&t=tok",
        "weixin://scan",
        "not a url",
    ],
)
def test_a_qr_code_from_anywhere_else_is_refused_before_anything_is_sent(
    service: FakeService, enrolled: Path, url: str
) -> None:
    before = list(service.calls)
    with pytest.raises(ecard.EcardError) as refused:
        ecard.sign_in(url, enrolled, confirm=lambda _: True, transport=httpx.MockTransport(service))
    assert refused.value.reason == "qr_foreign" and refused.value.exit_code == EXIT_REFUSED
    assert service.calls == before


def test_a_scan_answer_for_another_origin_or_login_is_refused(service: FakeService, enrolled: Path) -> None:
    url = f"{ISSUER}/ecard/scan?l={LOGIN}&t=tok"
    for change in ({"origin": "https://phish.example"}, {"login_id": "X" * 32}):
        service.scan_answer = {**service.scan_answer, **change}
        with pytest.raises(ecard.EcardError) as refused:
            ecard.sign_in(url, enrolled, confirm=lambda _: True, transport=httpx.MockTransport(service))
        assert refused.value.reason == "qr_foreign"
        service.scan_answer = FakeService().scan_answer
    assert f"POST /v1/ecard/sign-ins/{LOGIN}" not in service.calls


def test_refusals_carry_the_services_reason(service: FakeService, enrolled: Path) -> None:
    service.approve_status = 422
    url = f"{ISSUER}/ecard/scan?l={LOGIN}&t=tok"
    with pytest.raises(ecard.EcardError) as refused:
        ecard.sign_in(url, enrolled, confirm=lambda _: True, transport=httpx.MockTransport(service))
    assert refused.value.reason == "ecard_revoked" and refused.value.exit_code == EXIT_REFUSED

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(ecard.EcardError) as unreachable:
        ecard.list_ecards(ISSUER, "T", transport=httpx.MockTransport(down))
    assert unreachable.value.exit_code == EXIT_SERVICE
    with pytest.raises(ecard.EcardError) as broken:
        ecard.list_ecards(ISSUER, "T", transport=httpx.MockTransport(lambda r: httpx.Response(500, text="oops")))
    assert broken.value.exit_code == EXIT_SERVICE


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=120),
        st.builds(lambda tail: ISSUER + tail, st.text(max_size=80)),
        st.builds(lambda q: f"{ISSUER}/ecard/scan?{q}", st.text(max_size=80)),
    )
)
def test_reading_any_scanned_text_raises_only_ecard_error(text: str) -> None:
    state = ecard.State(issuer=ISSUER, ecard_id="e" * 22)
    try:
        scanned = ecard.read_qr(text, state)
    except ecard.EcardError as exc:
        assert exc.reason == "qr_foreign"
        return
    assert text.lower().startswith(ISSUER + "/ecard/scan?") and scanned.login_id and scanned.token
