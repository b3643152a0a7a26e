"""Kiosk logins end to end: software card in vpcd → pcscd → pyscard → kiosk client → HTTP → service, on
PostgreSQL + Redis and on the embedded default, for both card generations."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
from tests.fixtures.pcsc import InsertedCard, vpcd_slot
from tests.fixtures.service import PIN, Issued, LiveServer, add_kiosk, issue

pytestmark = pytest.mark.pcsc

CARDS = [(3, "3des"), (2, "3des"), (2, "sm4")]
APDUS = {3: 7, 2: 8}


@dataclasses.dataclass
class Rig:
    """A running service, a registered kiosk and the virtual reader."""

    server: LiveServer
    kiosk: KioskConfig
    reader: str
    insert_card: Callable[..., contextlib.AbstractContextManager[InsertedCard]]
    tmp: Path

    def issue(self, generation: int, **kwargs: Any) -> Issued:
        return issue(self.server.runtime, self.tmp, generation=generation, **kwargs)

    def set_status(self, card: Issued, status: str) -> None:
        with unit_of_work(self.server.runtime.sessions) as session:
            registry.set_card_status(session, card.card_number, status)

    @contextlib.contextmanager
    def inserted(self, card: Issued | CardFile, **kwargs: Any) -> Iterator[InsertedCard]:
        """The card in the reader; an Issued card keeps its PIN counter in its file, as a real card would."""
        if isinstance(card, CardFile):
            with self.insert_card(card, **kwargs) as inserted:
                yield inserted
            return
        path = card.path
        with self.insert_card(CardFile.load(path), persist=lambda cf: cf.save(path), **kwargs) as inserted:
            yield inserted

    def login(self, pin: str = PIN, *, kiosk: KioskConfig | None = None, **kwargs: Any) -> dict[str, Any]:
        return kiosk_client.login(self.server.url, kiosk or self.kiosk, self.reader, pin, **kwargs)

    def refused(self, pin: str = PIN, **kwargs: Any) -> LoginFailed:
        with pytest.raises(LoginFailed) as failed:
            self.login(pin, **kwargs)
        return failed.value

    def audit(self) -> list[tuple[str, str | None]]:
        with unit_of_work(self.server.runtime.sessions) as session:
            query = select(AuditEvent).where(AuditEvent.event == "kiosk_card_login").order_by(AuditEvent.id)
            return [(e.outcome, e.reason) for e in session.scalars(query)]

    def audited_cards(self) -> set[str | None]:
        with unit_of_work(self.server.runtime.sessions) as session:
            query = select(AuditEvent.card).where(AuditEvent.event == "kiosk_card_login")
            return set(session.scalars(query))


@pytest.fixture
def rig(live_server: LiveServer, pcscd: str, insert_card, tmp_path: Path) -> Rig:  # type: ignore[no-untyped-def]
    kiosk = load_kiosk(add_kiosk(live_server.runtime, tmp_path, "kiosk-1"))
    return Rig(live_server, kiosk, pcscd, insert_card, tmp_path)


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
def test_card_and_pin_login(rig: Rig, generation: int, algorithm: str) -> None:
    card = rig.issue(generation, algorithm=algorithm)
    with rig.inserted(card):
        answer = rig.login()
    assert answer["apdus"] == APDUS[generation]
    assert answer["acr"] == "urn:sscard:acr:substantial"
    assert answer["amr"] == (["sc", "hwk", "pin", "mfa"] if generation == 3 else ["sc", "pin", "mfa"])
    assert answer["identity"]["generation"] == generation and "*" in answer["identity"]["ssn"]
    assert rig.audit() == [("success", None)]


@pytest.mark.parametrize("generation", [3, 2])
def test_wrong_pin_says_how_many_tries_are_left_and_blocks_at_the_third(rig: Rig, generation: int) -> None:
    card = rig.issue(generation)
    with rig.inserted(card):
        for left in (2, 1):
            failed = rig.refused("000000")
            assert (failed.reason, failed.tries_left) == ("pin_wrong", left)
            assert f"{left} tries left" in failed.message
        assert CardFile.load(card.path).tries_left == 1  # the counter survives in the card
        assert rig.refused("000000").reason == "pin_blocked"
    with rig.inserted(card):  # out and in again
        assert rig.refused(PIN).reason == "pin_blocked"
    assert rig.audit() == [("failure", "pin_wrong")] * 2 + [("failure", "pin_blocked")] * 2
    assert rig.audited_cards() == {card.card_number[:2] + "****" + card.card_number[-3:]}  # the kiosk named it


def test_a_correct_pin_resets_the_counter(rig: Rig) -> None:
    card = rig.issue(3)
    with rig.inserted(card):
        rig.refused("999999")
        rig.login()
    assert CardFile.load(card.path).tries_left == 3


@pytest.mark.parametrize("generation", [3, 2])
def test_lost_card_is_refused(rig: Rig, generation: int) -> None:
    card = rig.issue(generation)
    rig.set_status(card, "reported_lost")
    with rig.inserted(card):
        failed = rig.refused()
    assert (failed.reason, failed.message, failed.exit_code) == (
        "card_lost",
        "card reported lost",
        kiosk_client.EXIT_REFUSED,
    )


@pytest.mark.parametrize("generation", [3, 2])
def test_a_replayed_challenge_response_is_refused(rig: Rig, generation: int) -> None:
    card = rig.issue(generation)
    recorder = Recorder()
    with rig.inserted(card):
        rig.login(transport=recorder)
    login_id, body = recorder.completions[0]
    with kiosk_client.kiosk_client(rig.server.url, rig.kiosk) as client:
        again = client.post(f"/v1/kiosk/logins/{login_id}/complete", json=body)
        assert (again.status_code, again.json()["reason"]) == (404, "login_unknown")
        fresh = client.post("/v1/kiosk/logins", json={}).json()["login_id"]
        replayed = client.post(f"/v1/kiosk/logins/{fresh}/complete", json=body)
        assert (replayed.status_code, replayed.json()["reason"]) == (422, "cryptogram_invalid")


@pytest.mark.parametrize("generation", [3, 2])
def test_a_response_made_at_another_kiosk_is_refused(rig: Rig, generation: int) -> None:
    other = load_kiosk(add_kiosk(rig.server.runtime, rig.tmp, "kiosk-2"))
    card = rig.issue(generation)
    recorder = Recorder(withhold=True)
    with rig.inserted(card):
        rig.refused(transport=recorder)
    login_id, body = recorder.completions[0]
    with kiosk_client.kiosk_client(rig.server.url, other) as client:
        own = client.post("/v1/kiosk/logins", json={}).json()["login_id"]
        moved = client.post(f"/v1/kiosk/logins/{own}/complete", json=body)
        assert (moved.status_code, moved.json()["reason"]) == (422, "cryptogram_invalid")
        stolen = client.post(f"/v1/kiosk/logins/{login_id}/complete", json=body)
        assert (stolen.status_code, stolen.json()["reason"]) == (404, "login_unknown")


def test_a_card_with_a_tampered_certificate_is_refused(rig: Rig) -> None:
    cardfile = CardFile.load(rig.issue(3).path)
    assert cardfile.gen3 is not None
    der = bytearray(cardfile.gen3.certificate_der)
    der[-5] ^= 0x40  # inside the issuer's signature
    tampered = dataclasses.replace(cardfile, gen3=dataclasses.replace(cardfile.gen3, certificate_der=bytes(der)))
    with rig.inserted(tampered):
        assert rig.refused().reason == "certificate_invalid"
    assert rig.audit() == [("failure", "certificate_invalid")]


def test_an_unknown_kiosk_is_refused(rig: Rig) -> None:
    stranger = KioskConfig(terminal_id="kiosk-404", private_key=Ed25519PrivateKey.generate())
    with rig.inserted(rig.issue(2)):
        failed = rig.refused(kiosk=stranger)
    assert (failed.reason, failed.exit_code) == ("terminal_unknown", kiosk_client.EXIT_REFUSED)


@pytest.mark.parametrize("generation", [3, 2])
def test_a_card_pulled_out_mid_login(rig: Rig, generation: int) -> None:
    with rig.inserted(rig.issue(generation), pull_after=3):
        failed = rig.refused()
    assert (failed.reason, failed.exit_code) == ("card_removed", kiosk_client.EXIT_READER)
    assert rig.audit() == [("failure", "card_removed")]


def test_an_empty_reader_spends_no_challenge(rig: Rig) -> None:
    with vpcd_slot():  # the slot, empty, is ours
        assert rig.refused(timeout=1).reason == "no_card"
    with pytest.raises(LoginFailed) as missing:
        kiosk_client.login(rig.server.url, rig.kiosk, "No Such Reader 00 00", PIN, timeout=1)
    assert missing.value.reason == "reader_missing"
    assert rig.audit() == []
