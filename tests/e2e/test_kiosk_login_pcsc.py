"""Kiosk logins end to end: software card in vpcd → pcscd → pyscard → kiosk client → HTTP → service, on
PostgreSQL + Redis and on the embedded default, for both card generations."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from authsvc.audit.models import AuditEvent
from authsvc.database import unit_of_work
from authsvc.registry import service as registry
from card import kiosk as kiosk_client
from card.cardfile import CardFile
from card.kiosk import KioskConfig, LoginFailed, load_kiosk
from tests.fixtures.pcsc import vpcd_slot
from tests.fixtures.service import PIN, LiveServer, add_kiosk, issue

pytestmark = pytest.mark.pcsc

CARDS = [(3, "3des"), (2, "3des"), (2, "sm4")]
APDUS = {3: 7, 2: 8}


@pytest.fixture
def kiosk(live_server: LiveServer, tmp_path: Path) -> KioskConfig:
    return load_kiosk(add_kiosk(live_server.runtime, tmp_path, "kiosk-1"))


def _persisting(path: Path) -> Callable[[CardFile], None]:
    return lambda cf: cf.save(path)


def _reasons(server: LiveServer) -> list[tuple[str, str | None]]:
    with unit_of_work(server.runtime.sessions) as session:
        query = select(AuditEvent).where(AuditEvent.event == "kiosk_card_login").order_by(AuditEvent.id)
        return [(e.outcome, e.reason) for e in session.scalars(query)]


class Recorder(httpx.HTTPTransport):
    """Passes requests through, keeping the completion bodies; can withhold the completion."""

    def __init__(self, *, withhold: bool = False) -> None:
        super().__init__()
        self.withhold = withhold
        self.completions: list[tuple[str, dict[str, str]]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/complete"):
            self.completions.append((request.url.path.split("/")[-2], json.loads(request.read())))
            if self.withhold:
                return httpx.Response(503, json={"reason": "unavailable"})
        return super().handle_request(request)


@pytest.mark.parametrize(("generation", "algorithm"), CARDS)
def test_card_and_pin_login(
    live_server: LiveServer,
    kiosk: KioskConfig,
    pcscd: str,
    insert_card,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    generation: int,
    algorithm: str,
) -> None:
    card = issue(live_server.runtime, tmp_path, generation=generation, algorithm=algorithm)
    with insert_card(CardFile.load(card.path), persist=_persisting(card.path)):
        answer = kiosk_client.login(live_server.url, kiosk, pcscd, PIN)
    assert answer["apdus"] == APDUS[generation]
    assert answer["acr"] == "urn:sscard:acr:card-pin"
    assert answer["amr"] == (["sc", "hwk", "pin", "mfa"] if generation == 3 else ["sc", "pin", "mfa"])
    assert answer["identity"]["generation"] == generation and "*" in answer["identity"]["ssn"]
    assert _reasons(live_server) == [("success", None)]


@pytest.mark.parametrize("generation", [3, 2])
def test_wrong_pin_says_how_many_tries_are_left_and_blocks_at_the_third(
    live_server: LiveServer,
    kiosk: KioskConfig,
    pcscd: str,
    insert_card,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    generation: int,
) -> None:
    card = issue(live_server.runtime, tmp_path, generation=generation)
    with insert_card(CardFile.load(card.path), persist=_persisting(card.path)):
        for left in (2, 1):
            with pytest.raises(LoginFailed) as failed:
                kiosk_client.login(live_server.url, kiosk, pcscd, "000000")
            assert (failed.value.reason, failed.value.tries_left) == ("pin_wrong", left)
            assert f"{left} tries left" in failed.value.message or f"{left} try left" in failed.value.message
        assert CardFile.load(card.path).tries_left == 1  # the counter survives in the card
        with pytest.raises(LoginFailed) as failed:
            kiosk_client.login(live_server.url, kiosk, pcscd, "000000")
        assert failed.value.reason == "pin_blocked"
    with insert_card(CardFile.load(card.path), persist=_persisting(card.path)):  # out and in again
        with pytest.raises(LoginFailed) as failed:
            kiosk_client.login(live_server.url, kiosk, pcscd, PIN)
        assert failed.value.reason == "pin_blocked"
    assert _reasons(live_server) == [("failure", "pin_wrong")] * 2 + [("failure", "pin_blocked")] * 2
    with unit_of_work(live_server.runtime.sessions) as session:
        masked = {e.card for e in session.scalars(select(AuditEvent).where(AuditEvent.event == "kiosk_card_login"))}
    assert masked == {card.card_number[:2] + "****" + card.card_number[-3:]}  # the kiosk named the card


def test_a_correct_pin_resets_the_counter(
    live_server: LiveServer,
    kiosk: KioskConfig,
    pcscd: str,
    insert_card,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    card = issue(live_server.runtime, tmp_path, generation=3)
    with insert_card(CardFile.load(card.path), persist=_persisting(card.path)):
        with pytest.raises(LoginFailed):
            kiosk_client.login(live_server.url, kiosk, pcscd, "999999")
        kiosk_client.login(live_server.url, kiosk, pcscd, PIN)
    assert CardFile.load(card.path).tries_left == 3


@pytest.mark.parametrize("generation", [3, 2])
def test_lost_card_is_refused(
    live_server: LiveServer,
    kiosk: KioskConfig,
    pcscd: str,
    insert_card,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    generation: int,
) -> None:
    card = issue(live_server.runtime, tmp_path, generation=generation)
    with unit_of_work(live_server.runtime.sessions) as session:
        registry.set_card_status(session, card.card_number, "reported_lost")
    with insert_card(CardFile.load(card.path)), pytest.raises(LoginFailed) as failed:
        kiosk_client.login(live_server.url, kiosk, pcscd, PIN)
    assert (failed.value.reason, failed.value.message) == ("card_lost", "card reported lost")
    assert failed.value.exit_code == kiosk_client.EXIT_REFUSED


@pytest.mark.parametrize("generation", [3, 2])
def test_a_replayed_challenge_response_is_refused(
    live_server: LiveServer,
    kiosk: KioskConfig,
    pcscd: str,  # type: ignore[no-untyped-def]
    insert_card,
    tmp_path: Path,
    generation: int,
) -> None:
    card = issue(live_server.runtime, tmp_path, generation=generation)
    recorder = Recorder()
    with insert_card(CardFile.load(card.path)):
        kiosk_client.login(live_server.url, kiosk, pcscd, PIN, transport=recorder)
    login_id, body = recorder.completions[0]
    with kiosk_client.kiosk_client(live_server.url, kiosk) as client:
        again = client.post(f"/v1/kiosk/logins/{login_id}/complete", json=body)
        assert (again.status_code, again.json()["reason"]) == (404, "login_unknown")
        fresh = client.post("/v1/kiosk/logins", json={}).json()["login_id"]
        replayed = client.post(f"/v1/kiosk/logins/{fresh}/complete", json=body)
        assert (replayed.status_code, replayed.json()["reason"]) == (422, "cryptogram_invalid")


@pytest.mark.parametrize("generation", [3, 2])
def test_a_response_made_at_another_kiosk_is_refused(
    live_server: LiveServer,
    kiosk: KioskConfig,
    pcscd: str,  # type: ignore[no-untyped-def]
    insert_card,
    tmp_path: Path,
    generation: int,
) -> None:
    other = load_kiosk(add_kiosk(live_server.runtime, tmp_path, "kiosk-2"))
    card = issue(live_server.runtime, tmp_path, generation=generation)
    recorder = Recorder(withhold=True)
    with insert_card(CardFile.load(card.path)), pytest.raises(LoginFailed):
        kiosk_client.login(live_server.url, kiosk, pcscd, PIN, transport=recorder)
    login_id, body = recorder.completions[0]
    with kiosk_client.kiosk_client(live_server.url, other) as client:
        own = client.post("/v1/kiosk/logins", json={}).json()["login_id"]
        moved = client.post(f"/v1/kiosk/logins/{own}/complete", json=body)
        assert (moved.status_code, moved.json()["reason"]) == (422, "cryptogram_invalid")
        stolen = client.post(f"/v1/kiosk/logins/{login_id}/complete", json=body)
        assert (stolen.status_code, stolen.json()["reason"]) == (404, "login_unknown")


def test_a_card_with_a_tampered_certificate_is_refused(
    live_server: LiveServer,
    kiosk: KioskConfig,
    pcscd: str,  # type: ignore[no-untyped-def]
    insert_card,
    tmp_path: Path,
) -> None:
    card = issue(live_server.runtime, tmp_path, generation=3)
    cardfile = CardFile.load(card.path)
    assert cardfile.gen3 is not None
    der = bytearray(cardfile.gen3.certificate_der)
    der[-5] ^= 0x40  # inside the issuer's signature
    tampered = dataclasses.replace(cardfile, gen3=dataclasses.replace(cardfile.gen3, certificate_der=bytes(der)))
    with insert_card(tampered), pytest.raises(LoginFailed) as failed:
        kiosk_client.login(live_server.url, kiosk, pcscd, PIN)
    assert failed.value.reason == "certificate_invalid"
    assert _reasons(live_server) == [("failure", "certificate_invalid")]


def test_an_unknown_kiosk_is_refused(live_server: LiveServer, pcscd: str, insert_card, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    card = issue(live_server.runtime, tmp_path, generation=2)
    stranger = KioskConfig(terminal_id="kiosk-404", private_key=Ed25519PrivateKey.generate())
    with insert_card(CardFile.load(card.path)), pytest.raises(LoginFailed) as failed:
        kiosk_client.login(live_server.url, stranger, pcscd, PIN)
    assert failed.value.reason == "terminal_unknown" and failed.value.exit_code == kiosk_client.EXIT_REFUSED


@pytest.mark.parametrize("generation", [3, 2])
def test_a_card_pulled_out_mid_login(
    live_server: LiveServer,
    kiosk: KioskConfig,
    pcscd: str,
    insert_card,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    generation: int,
) -> None:
    card = issue(live_server.runtime, tmp_path, generation=generation)
    with insert_card(CardFile.load(card.path), pull_after=3), pytest.raises(LoginFailed) as failed:
        kiosk_client.login(live_server.url, kiosk, pcscd, PIN)
    assert failed.value.reason == "card_removed" and failed.value.exit_code == kiosk_client.EXIT_READER
    assert _reasons(live_server) == [("failure", "card_removed")]


def test_an_empty_reader_spends_no_challenge(live_server: LiveServer, kiosk: KioskConfig, pcscd: str) -> None:
    with vpcd_slot(), pytest.raises(LoginFailed) as failed:  # the slot, empty, is ours
        kiosk_client.login(live_server.url, kiosk, pcscd, PIN, timeout=1)
    assert failed.value.reason == "no_card"
    with pytest.raises(LoginFailed) as failed:
        kiosk_client.login(live_server.url, kiosk, "No Such Reader 00 00", PIN, timeout=1)
    assert failed.value.reason == "reader_missing"
    assert _reasons(live_server) == []
