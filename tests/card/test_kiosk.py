"""The kiosk client against a checking stand-in for the service (tests/card/fake_service.py), card in process."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from card import kiosk as k
from card.application import SoftCard
from card.cardfile import CardFile
from card.reader import NoCard, Reader, ReaderMissing
from tests.card.factories import PIN, gen2_card, gen3_card
from tests.card.fake_service import FakeService, problem
from tests.card.links import DirectLink, ScriptedLink

SERVICE = "http://sscard.test"
TERMINAL = "kiosk-001"


@pytest.fixture(scope="module")
def kiosk_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def kiosk(kiosk_key: Ed25519PrivateKey) -> k.KioskConfig:
    return k.KioskConfig(terminal_id=TERMINAL, private_key=kiosk_key)


@pytest.fixture
def service(kiosk_key: Ed25519PrivateKey) -> FakeService:
    return FakeService(kiosk_key.public_key(), TERMINAL)


@pytest.fixture(scope="module")
def cards() -> dict[str, CardFile]:
    return {"gen3": gen3_card(), "gen2-3des": gen2_card("3des"), "gen2-sm4": gen2_card("sm4")}


def reader_for(link: Any) -> Callable[[str, float], Reader]:
    def open_reader(name: str, timeout: float) -> Reader:
        assert name == "Virtual PCD 00 00"
        return Reader(link, name)

    return open_reader


def do_login(kiosk: k.KioskConfig, service: FakeService, link: Any, pin: str = PIN, url: str = SERVICE) -> dict:
    return k.login(
        url, kiosk, "Virtual PCD 00 00", pin, transport=httpx.MockTransport(service), open_reader=reader_for(link)
    )


def fail(kiosk: k.KioskConfig, service: FakeService, link: Any, pin: str = PIN) -> k.LoginFailed:
    with pytest.raises(k.LoginFailed) as caught:
        do_login(kiosk, service, link, pin)
    return caught.value


def fresh(cardfile: CardFile) -> DirectLink:
    import dataclasses

    return DirectLink(SoftCard(dataclasses.replace(cardfile)))


@pytest.mark.parametrize(("name", "apdus"), [("gen3", 7), ("gen2-3des", 8), ("gen2-sm4", 8)])
def test_login(kiosk: k.KioskConfig, service: FakeService, cards: dict[str, CardFile], name: str, apdus: int) -> None:
    link = fresh(cards[name])
    result = do_login(kiosk, service, link)
    assert result["apdus"] == apdus
    assert result["token_type"] == "Bearer" and result["identity"]["pin"] is True
    assert result["identity"]["generation"] == cards[name].generation
    assert [step for step, _ in service.requests] == ["start", "complete"]
    body = service.requests[1][1]
    assert set(body) == {"ef05", "ef06", "response"} | ({"certificate"} if name == "gen3" else set())
    assert link.closed  # the reader is released (and the card reset) after the login


def test_the_signature_covers_a_path_prefix(
    kiosk: k.KioskConfig, kiosk_key: Ed25519PrivateKey, cards: dict[str, CardFile]
) -> None:
    service = FakeService(kiosk_key.public_key(), TERMINAL, prefix="/sso")
    result = do_login(kiosk, service, fresh(cards["gen2-sm4"]), url=SERVICE + "/sso")
    assert result["apdus"] == 8


def test_another_kiosk_key_is_refused(kiosk: k.KioskConfig, cards: dict[str, CardFile]) -> None:
    service = FakeService(Ed25519PrivateKey.generate().public_key(), TERMINAL)
    error = fail(kiosk, service, fresh(cards["gen3"]))
    assert (error.reason, error.exit_code) == ("signature_invalid", k.EXIT_REFUSED)
    assert str(error) == "request signature refused"


def test_wrong_pin_is_aborted_with_the_tries_left(
    kiosk: k.KioskConfig, service: FakeService, cards: dict[str, CardFile]
) -> None:
    error = fail(kiosk, service, fresh(cards["gen2-3des"]), pin="0000")
    assert (error.reason, error.message, error.exit_code) == ("pin_wrong", "wrong PIN, 2 tries left", k.EXIT_CARD)
    assert error.tries_left == 2
    assert service.requests[-1] == ("abort", {"reason": "pin_wrong", "tries_left": 2, "card_number": "A00000001"})


def test_blocked_pin_is_aborted(kiosk: k.KioskConfig, service: FakeService, cards: dict[str, CardFile]) -> None:
    import dataclasses

    blocked = dataclasses.replace(cards["gen3"], tries_left=0)
    error = fail(kiosk, service, DirectLink(SoftCard(blocked)))
    assert (error.reason, error.message, error.exit_code) == ("pin_blocked", "PIN blocked", k.EXIT_CARD)
    assert service.requests[-1] == ("abort", {"reason": "pin_blocked", "card_number": "A00000001"})


def test_card_removed_is_aborted(kiosk: k.KioskConfig, service: FakeService, cards: dict[str, CardFile]) -> None:
    link = DirectLink(SoftCard(cards["gen3"]), pull_after=4)
    error = fail(kiosk, service, link)
    assert (error.reason, error.message, error.exit_code) == ("card_removed", "card removed", k.EXIT_READER)
    assert service.requests[-1] == ("abort", {"reason": "card_removed", "card_number": "A00000001"})


def test_a_foreign_card_is_aborted_as_not_recognised(kiosk: k.KioskConfig, service: FakeService) -> None:
    error = fail(kiosk, service, ScriptedLink({}))
    assert (error.reason, error.exit_code) == ("card_not_recognised", k.EXIT_CARD)
    assert error.message.startswith("card not recognised")
    assert service.requests[-1] == ("abort", {"reason": "card_not_recognised"})


def test_a_misbehaving_card_is_aborted_as_cancelled(kiosk: k.KioskConfig, service: FakeService) -> None:
    link = ScriptedLink({"00A4040C0F7378312E73682EC9E7BBE1B1A3D5CF": "9000", "00B2012D00": "6700"})
    error = fail(kiosk, service, link)
    assert (error.reason, error.exit_code) == ("card_error", k.EXIT_CARD)
    assert error.message.startswith("card error")
    assert service.requests[-1] == ("abort", {"reason": "cancelled"})


def test_a_failing_abort_does_not_hide_the_card_failure(
    kiosk: k.KioskConfig, service: FakeService, cards: dict[str, CardFile]
) -> None:
    service.refuse["abort"] = httpx.Response(500)
    assert fail(kiosk, service, fresh(cards["gen3"]), pin="0000").reason == "pin_wrong"


@pytest.mark.parametrize(
    ("step", "response", "reason", "message", "code"),
    [
        ("complete", problem(422, "card_lost"), "card_lost", "card reported lost", k.EXIT_REFUSED),
        ("complete", problem(422, "card_expired"), "card_expired", "card expired", k.EXIT_REFUSED),
        (
            "complete",
            problem(422, "holder_mismatch"),
            "holder_mismatch",
            "card data do not match the holder on record",
            k.EXIT_REFUSED,
        ),
        (
            "complete",
            problem(404, "login_unknown"),
            "login_unknown",
            "login expired or unknown, start again",
            k.EXIT_REFUSED,
        ),
        (
            "complete",
            problem(422, "brand_new_reason"),
            "brand_new_reason",
            "refused by the service: brand_new_reason",
            k.EXIT_REFUSED,
        ),
        ("start", problem(403, "terminal_disabled"), "terminal_disabled", "this kiosk is disabled", k.EXIT_REFUSED),
        (
            "start",
            problem(429, "throttled", {"Retry-After": "30"}),
            "throttled",
            "too many attempts, try again in 30 s",
            k.EXIT_REFUSED,
        ),
        ("start", problem(422, "Bad Reason!"), "http_422", "service answered HTTP 422: Bad Reason!", k.EXIT_REFUSED),
        ("start", problem(500, "internal"), "internal", "service answered HTTP 500: internal", k.EXIT_SERVICE),
        (
            "start",
            httpx.Response(502, text="<html>bad gateway</html>"),
            "http_502",
            "service answered HTTP 502",
            k.EXIT_SERVICE,
        ),
        (
            "start",
            httpx.Response(201, text="not json"),
            "service_error",
            "service answered something that is not JSON",
            k.EXIT_SERVICE,
        ),
        (
            "start",
            httpx.Response(201, json=[1]),
            "service_error",
            "service answered JSON that is not an object",
            k.EXIT_SERVICE,
        ),
    ],
)
def test_service_answers_map_to_reasons(
    kiosk: k.KioskConfig,
    service: FakeService,
    cards: dict[str, CardFile],
    step: str,
    response: httpx.Response,
    reason: str,
    message: str,
    code: int,
) -> None:
    service.refuse[step] = response
    link = fresh(cards["gen3"])
    error = fail(kiosk, service, link)
    assert (error.reason, error.message, error.exit_code) == (reason, message, code)
    assert "abort" not in [s for s, _ in service.requests]
    if step == "start":
        assert link.log == []  # no card work without a challenge


@pytest.mark.parametrize(
    "answer",
    [
        {"login_id": "../../admin", "challenge": "A" * 43},
        {"login_id": "x", "challenge": "A" * 42},
        {"login_id": "x", "challenge": "A" * 42 + "+"},
        {"login_id": "x"},
        {"challenge": "A" * 43},
    ],
)
def test_a_malformed_start_answer_is_a_service_error(
    kiosk: k.KioskConfig, service: FakeService, cards: dict[str, CardFile], answer: dict[str, Any]
) -> None:
    service.start_answer = answer
    error = fail(kiosk, service, fresh(cards["gen3"]))
    assert (error.reason, error.exit_code) == ("service_error", k.EXIT_SERVICE)


def test_unreachable_service(kiosk: k.KioskConfig, cards: dict[str, CardFile]) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    for handler, message in ((down, "service unreachable: connection refused"), (slow, "did not answer in time")):
        with pytest.raises(k.LoginFailed) as caught:
            k.login(
                SERVICE,
                kiosk,
                "Virtual PCD 00 00",
                PIN,
                transport=httpx.MockTransport(handler),
                open_reader=reader_for(fresh(cards["gen3"])),
            )
        assert (caught.value.reason, caught.value.exit_code) == ("service_unreachable", k.EXIT_SERVICE)
        assert message in caught.value.message


@pytest.mark.parametrize(
    ("error", "reason"), [(ReaderMissing('reader "X" not found'), "reader_missing"), (NoCard("no card"), "no_card")]
)
def test_reader_problems_happen_before_the_service_is_asked(
    kiosk: k.KioskConfig, service: FakeService, error: Exception, reason: str
) -> None:
    def open_reader(name: str, timeout: float) -> Reader:
        raise error

    with pytest.raises(k.LoginFailed) as caught:
        k.login(SERVICE, kiosk, "X", PIN, transport=httpx.MockTransport(service), open_reader=open_reader)
    assert (caught.value.reason, caught.value.message, caught.value.exit_code) == (reason, str(error), k.EXIT_READER)
    assert service.requests == []


def test_a_malformed_pin_is_a_usage_error(kiosk: k.KioskConfig, service: FakeService) -> None:
    error = fail(kiosk, service, ScriptedLink({}), pin="12a4")
    assert (error.reason, error.exit_code) == ("invalid_pin", k.EXIT_USAGE)
    assert service.requests == []


def test_interrupting_a_login_aborts_it(kiosk: k.KioskConfig, service: FakeService) -> None:
    class Interrupted(ScriptedLink):
        def transmit_raw(self, apdu: bytes) -> bytes:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        do_login(kiosk, service, Interrupted({}))
    assert service.requests[-1] == ("abort", {"reason": "cancelled"})


# -- kiosk.json --------------------------------------------------------------------------------------------


def _pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def test_load_kiosk(tmp_path: Path, kiosk_key: Ed25519PrivateKey) -> None:
    path = tmp_path / "kiosk.json"
    path.write_text(
        json.dumps(
            {
                "format": "sscard-kiosk/1",
                "terminal_id": TERMINAL,
                "private_key_pem": _pem(kiosk_key),
                "service": SERVICE,
            }
        )
    )
    loaded = k.load_kiosk(path)
    assert loaded.terminal_id == TERMINAL and loaded.service == SERVICE
    assert loaded.private_key.public_key() == kiosk_key.public_key()


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ({"format": "sscard-kiosk/2"}, "format"),
        ({"terminal_id": "kiosk 1"}, "terminal_id"),
        ({"terminal_id": "k" * 65}, "terminal_id"),
        ({"terminal_id": 7}, "terminal_id"),
        ({"private_key_pem": None}, "private_key_pem"),
        ({"private_key_pem": "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n"}, "private_key_pem"),
        ({"private_key_pem": "ec"}, "Ed25519"),
        ({"service": 80}, "service"),
    ],
)
def test_load_kiosk_refuses_bad_files(
    tmp_path: Path, kiosk_key: Ed25519PrivateKey, doc: dict[str, Any], error: str
) -> None:
    if doc.get("private_key_pem") == "ec":
        doc["private_key_pem"] = _pem(ec.generate_private_key(ec.SECP256R1()))
    path = tmp_path / "kiosk.json"
    path.write_text(
        json.dumps({"format": "sscard-kiosk/1", "terminal_id": TERMINAL, "private_key_pem": _pem(kiosk_key), **doc})
    )
    with pytest.raises(k.KioskConfigError, match=error):
        k.load_kiosk(path)


@pytest.mark.parametrize("content", [None, b"{", b"[]"])
def test_load_kiosk_refuses_missing_or_non_json(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "kiosk.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(k.KioskConfigError, match=str(path)):
        k.load_kiosk(path)
