"""The software card through the real stack: vpcd -> pcscd -> pyscard (and `sscard` as a whole)."""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from card import cryptogram
from card.apdu import PinBlocked, WrongPin
from card.application import ATR_GEN2, ATR_GEN3
from card.cardfile import CardFile
from card.cli import main
from card.reader import CardRemoved, CardSession, NoCard, ReaderMissing, connect, list_readers, wait_for_card
from tests.card.factories import MASTER_KEY, PIN, gen2_card, gen3_card
from tests.card.fake_service import FakeService, problem
from tests.card.http_double import serve
from tests.fixtures.pcsc import READER, InsertedCard

pytestmark = pytest.mark.pcsc

Insert = Callable[..., AbstractContextManager[InsertedCard]]
CHALLENGE = bytes(range(100, 132))
CONTEXT = cryptogram.kiosk_context("kiosk-001")


@pytest.fixture(scope="module")
def cards() -> dict[str, CardFile]:
    return {"gen3": gen3_card(), "gen2-3des": gen2_card("3des"), "gen2-sm4": gen2_card("sm4")}


def fresh(cards: dict[str, CardFile], name: str) -> CardFile:
    return dataclasses.replace(cards[name])


def test_the_virtual_reader_is_listed(pcscd: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert READER in list_readers()
    assert main(["readers"]) == 0
    assert READER in capsys.readouterr().out.splitlines()


@pytest.mark.parametrize(("name", "apdus"), [("gen3", 7), ("gen2-3des", 8), ("gen2-sm4", 8)])
def test_a_whole_card_session(
    pcscd: str, insert_card: Insert, cards: dict[str, CardFile], name: str, apdus: int
) -> None:
    cardfile = fresh(cards, name)
    with insert_card(cardfile), connect(pcscd) as reader:
        assert reader.link.atr == (ATR_GEN3 if cardfile.generation == 3 else ATR_GEN2)  # type: ignore[attr-defined]
        session = CardSession(reader)
        session.select()
        ef05, ident = session.read_identification()
        ef06, holder = session.read_holder()
        assert (ident, holder) == (cardfile.identification, cardfile.holder)
        session.verify_pin(PIN)
        response = session.internal_authenticate(CHALLENGE, CONTEXT)
        message = cryptogram.auth_message(
            challenge=CHALLENGE, context=CONTEXT, digest=cryptogram.files_digest(ef05, ef06), flags=response[0]
        )
        assert response[0] == cryptogram.FLAG_PIN_VERIFIED
        if cardfile.gen3 is not None:
            certificate = session.read_certificate()
            assert certificate == cardfile.gen3.certificate_der
            public = x509.load_der_x509_certificate(certificate).public_key()
            assert isinstance(public, ec.EllipticCurvePublicKey)
            assert cryptogram.verify_message(public, message, response[1:])
        else:
            assert cardfile.gen2 is not None
            algorithm = cardfile.gen2.algorithm
            key = cryptogram.diversify_key(MASTER_KEY, ident.identification_code, algorithm)
            assert cryptogram.verify_symmetric_cryptogram(key, algorithm, message, response[1:])
        assert reader.apdu_count == apdus


def test_wrong_pins_are_counted_and_persisted(
    pcscd: str, insert_card: Insert, cards: dict[str, CardFile], tmp_path: Path
) -> None:
    path = tmp_path / "card.json"
    cardfile = fresh(cards, "gen2-sm4")
    cardfile.save(path)
    with insert_card(cardfile, persist=lambda cf: cf.save(path)), connect(pcscd) as reader:
        session = CardSession(reader)
        session.select()
        for left in (2, 1):
            with pytest.raises(WrongPin) as caught:
                session.verify_pin("0000")
            assert caught.value.tries_left == left
            assert CardFile.load(path).tries_left == left
        with pytest.raises(PinBlocked):
            session.verify_pin("0000")
    assert CardFile.load(path).tries_left == 0


def test_a_card_pulled_mid_exchange_raises_card_removed(
    pcscd: str, insert_card: Insert, cards: dict[str, CardFile]
) -> None:
    with insert_card(fresh(cards, "gen3"), pull_after=2) as inserted, connect(pcscd) as reader:
        session = CardSession(reader)
        session.select()
        session.read_identification()
        with pytest.raises(CardRemoved, match="card removed"):
            session.read_holder()
        inserted.thread.join(5)
        assert inserted.answered == 2
    assert wait_for_card(pcscd, present=False, timeout=1)


def test_a_missing_reader(pcscd: str) -> None:
    with pytest.raises(ReaderMissing, match='reader "No Such Reader 00 00" not found'):
        connect("No Such Reader 00 00", timeout=0.5)
    with pytest.raises(ReaderMissing):
        wait_for_card("No Such Reader 00 00", timeout=0.1)


def test_an_empty_reader(empty_reader: str) -> None:
    with pytest.raises(NoCard, match=f'no card in reader "{empty_reader}"'):
        connect(empty_reader, timeout=0.5)


def test_the_card_is_reset_when_the_reader_is_released(
    pcscd: str, insert_card: Insert, cards: dict[str, CardFile]
) -> None:
    with insert_card(fresh(cards, "gen2-3des")):
        with connect(pcscd) as reader:
            session = CardSession(reader)
            session.select()
            session.verify_pin(PIN)
            assert session.pin_status() is None
        with connect(pcscd) as reader:
            session = CardSession(reader)
            session.select()
            assert session.pin_status() == 3  # a PIN verified for one program does not carry over


# -- `sscard emulate` as a process -------------------------------------------------------------------------


def test_sscard_emulate(pcscd: str, emulator: Callable[..., Any], cards: dict[str, CardFile], tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    fresh(cards, "gen3").save(path)
    with emulator(path) as process, connect(pcscd) as reader:
        session = CardSession(reader)
        session.select()
        with pytest.raises(WrongPin):
            session.verify_pin("9999")
        assert CardFile.load(path).tries_left == 2  # written back before the card answered
        session.verify_pin(PIN)
        assert session.read_certificate() == cards["gen3"].gen3.certificate_der  # type: ignore[union-attr]
        assert reader.apdu_count == 5
    assert process.returncode == 0, process.stderr.read()
    assert CardFile.load(path).tries_left == 3


def test_sscard_emulate_pull_after(
    pcscd: str, emulator: Callable[..., Any], cards: dict[str, CardFile], tmp_path: Path
) -> None:
    path = tmp_path / "card.json"
    fresh(cards, "gen2-3des").save(path)
    with emulator(path, pull_after=3) as process, connect(pcscd) as reader:
        session = CardSession(reader)
        session.select()
        with pytest.raises(CardRemoved):
            session.read_identification()
            session.read_holder()
        assert process.wait(10) == 0
    assert "pulled out after 3 APDUs" in process.stderr.read()


# -- `sscard login` as a whole ---------------------------------------------------------------------------------


@pytest.fixture
def kiosk_file(tmp_path: Path) -> tuple[Path, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = tmp_path / "kiosk.json"
    path.write_text(json.dumps({"format": "sscard-kiosk/1", "terminal_id": "kiosk-001", "private_key_pem": pem}))
    return path, key


def sscard_login(
    capsys: pytest.CaptureFixture[str], url: str, kiosk: Path, *extra: str, pin: str = PIN
) -> tuple[int, str, str]:
    code = main(["login", "--service", url, "--terminal", str(kiosk), "--reader", READER, "--pin", pin, *extra])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("name", "apdus"), [("gen3", 7), ("gen2-sm4", 8)])
def test_sscard_login(
    pcscd: str,
    insert_card: Insert,
    cards: dict[str, CardFile],
    kiosk_file: Any,
    capsys: pytest.CaptureFixture[str],
    name: str,
    apdus: int,
) -> None:
    path, key = kiosk_file
    service = FakeService(key.public_key(), "kiosk-001")
    with serve(service) as url, insert_card(fresh(cards, name)):
        code, out, err = sscard_login(capsys, url, path)
    assert (code, err) == (0, "")
    assert len(out.splitlines()) == 1
    answer = json.loads(out)
    assert answer["apdus"] == apdus and answer["token_type"] == "Bearer" and answer["identity"]["pin"] is True


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("wrong pin", 3, "sscard login: wrong PIN, 2 tries left"),
        ("blocked", 3, "sscard login: PIN blocked"),
        ("card lost", 4, "sscard login: card reported lost"),
        ("card pulled", 5, "sscard login: card removed"),
    ],
)
def test_sscard_login_failures(
    pcscd: str,
    insert_card: Insert,
    cards: dict[str, CardFile],
    kiosk_file: Any,
    capsys: pytest.CaptureFixture[str],
    case: str,
    code: int,
    message: str,
) -> None:
    path, key = kiosk_file
    service = FakeService(key.public_key(), "kiosk-001")
    cardfile = fresh(cards, "gen3")
    if case == "blocked":
        cardfile.tries_left = 0
    if case == "card lost":
        service.refuse["complete"] = problem(422, "card_lost")
    with serve(service) as url, insert_card(cardfile, pull_after=3 if case == "card pulled" else None):
        result = sscard_login(capsys, url, path, pin="0000" if case == "wrong pin" else PIN)
    assert result == (code, "", message + "\n")


def test_sscard_login_without_reader_or_card(
    empty_reader: str, kiosk_file: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = kiosk_file
    code = main(
        ["login", "--service", "http://127.0.0.1:9", "--terminal", str(path), "--reader", "Nope 00 00", "--pin", PIN]
    )
    assert (code, capsys.readouterr().err) == (5, 'sscard login: reader "Nope 00 00" not found\n')
    code, _, err = sscard_login(capsys, "http://127.0.0.1:9", path, "--timeout", "0.3")
    assert (code, err) == (5, f'sscard login: no card in reader "{READER}"\n')


def test_sscard_login_with_the_service_down(
    insert_card: Insert, cards: dict[str, CardFile], kiosk_file: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = kiosk_file
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with insert_card(fresh(cards, "gen3")):
            code, out, err = sscard_login(capsys, f"http://127.0.0.1:{port}", path)
    assert code == 6 and out == "" and err.startswith("sscard login: service unreachable")
