"""The card side of a login without PC/SC: exact APDUs, counts and the T=0 dialogue (vectors/login.json)."""

from __future__ import annotations

from typing import Any

import pytest

from card import cryptogram
from card.apdu import CardError, CardNotRecognised, CommandAPDU, PinBlocked, WrongPin
from card.application import SoftCard
from card.cardfile import CardFile
from card.pinblock import PinBlockError
from card.reader import CardRemoved, Reader, ReaderError
from card.session import CardSession, der_total_length
from tests.card.factories import PIN, gen2_card, gen3_card, vectors
from tests.card.links import DirectLink, ScriptedLink

LOGIN = vectors("login")
SELECT = "00A4040C0F7378312E73682EC9E7BBE1B1A3D5CF"


def _cardfile(vector: dict[str, Any]) -> CardFile:
    return gen3_card() if vector["generation"] == 3 else gen2_card(vector["algorithm"])


def run_login(session: CardSession, pin: str = PIN) -> dict[str, bytes]:
    session.select()
    ef05, ident = session.read_identification()
    ef06, _ = session.read_holder()
    session.verify_pin(pin)
    challenge = bytes.fromhex(LOGIN["challenge"])
    response = session.internal_authenticate(challenge, cryptogram.kiosk_context(LOGIN["terminal_id"]))
    out = {"ef05": ef05, "ef06": ef06, "response": response}
    if ident.generation == 3:
        out["certificate"] = session.read_certificate()
    return out


@pytest.mark.parametrize("vector", LOGIN["cards"], ids=lambda v: v["name"])
def test_login_apdus_are_exactly_the_documented_ones(vector: dict[str, Any]) -> None:
    cardfile = _cardfile(vector)
    link = DirectLink(SoftCard(cardfile))
    reader = Reader(link)
    result = run_login(CardSession(reader))
    assert reader.apdu_count == vector["apdus"] == len(link.log)
    for (command, response), expected in zip(link.log, vector["exchanges"], strict=True):
        assert command.hex().upper() == expected["command"]
        assert response[-2:].hex().upper() == expected["sw"]
        data = response[:-2]
        if "data_len" in expected:
            assert len(data) == expected["data_len"]
            assert data.hex().upper().startswith(expected.get("data_prefix", ""))
        elif not expected["data"].startswith("<"):
            assert data.hex().upper() == expected["data"]
    if vector["generation"] == 3:
        assert cardfile.gen3 is not None
        assert result["certificate"] == cardfile.gen3.certificate_der
        assert link.log[-1][1][:-2] == cardfile.gen3.certificate_der[256:]
    else:
        assert result["response"].hex().upper() == vector["exchanges"][-1]["data"]


def test_reader_resends_on_6c_and_fetches_61() -> None:
    link = ScriptedLink(
        {
            "00B2012D00": "6C03",
            "00B2012D03": "6103",
            "00C0000003": "AABBCC6102",
            "00C0000002": "DDEE9000",
        }
    )
    reader = Reader(link)
    response = reader.transmit(CommandAPDU(0x00, 0xB2, 0x01, 0x2D, le=256))
    assert response.data == bytes.fromhex("AABBCCDDEE") and response.sw == 0x9000
    assert reader.apdu_count == 4 and link.sent == ["00B2012D00", "00B2012D03", "00C0000003", "00C0000002"]


def test_a_card_that_chains_forever_is_cut_off() -> None:
    reader = Reader(ScriptedLink({"00B0870000": "6101", "00C0000001": "006101"}))
    with pytest.raises(ReaderError, match="kept asking"):
        reader.transmit(CommandAPDU(0x00, 0xB0, 0x87, 0x00, le=256))


def test_an_answer_shorter_than_a_status_word_is_a_reader_error() -> None:
    with pytest.raises(ReaderError):
        Reader(ScriptedLink({"00200000": "90"})).transmit(CommandAPDU(0x00, 0x20, 0x00, 0x00))


def test_wrong_pin_and_blocked() -> None:
    cardfile = gen2_card("3des")
    session = CardSession(Reader(DirectLink(SoftCard(cardfile))))
    session.select()
    assert session.pin_status() == 3
    with pytest.raises(WrongPin) as caught:
        session.verify_pin("0000")
    assert caught.value.tries_left == 2 and str(caught.value) == "wrong PIN, 2 tries left"
    with pytest.raises(WrongPin):
        session.verify_pin("0000")
    assert session.pin_status() == 1
    with pytest.raises(PinBlocked, match="PIN blocked"):
        session.verify_pin("0000")
    assert session.pin_status() == 0
    with pytest.raises(PinBlocked):
        session.verify_pin(PIN)


def test_pin_status_after_verify() -> None:
    session = CardSession(Reader(DirectLink(SoftCard(gen2_card("sm4")))))
    session.select()
    session.verify_pin(PIN)
    assert session.pin_status() is None


@pytest.mark.parametrize("pin", ["123", "1234567890123", "12 34", "１２３４", ""])
def test_a_malformed_pin_never_reaches_the_card(pin: str) -> None:
    reader = Reader(ScriptedLink({}))
    with pytest.raises(PinBlockError):
        CardSession(reader).verify_pin(pin)
    assert reader.apdu_count == 0


def test_a_card_without_the_application_is_not_recognised() -> None:
    with pytest.raises(CardNotRecognised, match="card not recognised"):
        CardSession(Reader(ScriptedLink({SELECT: "6A82"}))).select()


def test_malformed_records_are_not_recognised() -> None:
    session = CardSession(Reader(ScriptedLink({"00B2012D00": "0201319000", "00B2083500": "0801319000"})))
    with pytest.raises(CardNotRecognised, match="EF05"):
        session.read_identification()
    with pytest.raises(CardNotRecognised, match="EF06"):
        session.read_holder()


def test_other_status_words_are_card_errors() -> None:
    session = CardSession(Reader(ScriptedLink({"00B2012D00": "6985"})))
    with pytest.raises(CardError, match="6985"):
        session.read_identification()


def _cert_link(content: bytes) -> ScriptedLink:
    answers = {}
    for offset in range(0, len(content), 256):
        part = content[offset : offset + 256]
        sw = "9000" if len(part) == 256 else "6282"
        p1p2 = "8700" if offset == 0 else f"{offset:04X}"
        answers[f"00B0{p1p2}00"] = part.hex() + sw
    return ScriptedLink(answers)


def test_certificate_padding_after_the_der_is_ignored() -> None:
    der = bytes.fromhex("308201F4") + bytes(500)
    link = _cert_link(der + b"\xff" * 300)
    assert CardSession(Reader(link)).read_certificate() == der
    assert link.sent == ["00B0870000", "00B0010000"]


def test_a_short_certificate_needs_one_read() -> None:
    der = bytes.fromhex("3081C8") + bytes(200)
    link = _cert_link(der)
    assert CardSession(Reader(link)).read_certificate() == der
    assert link.sent == ["00B0870000"]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (bytes.fromhex("308201F4") + bytes(300), "ends inside"),
        (bytes.fromhex("318201F4") + bytes(500), "DER certificate"),
        (bytes.fromhex("3083FFFFFF") + bytes(300), "length"),
        (bytes.fromhex("30827FFF") + bytes(300), "plausible"),
    ],
)
def test_broken_certificates(content: bytes, error: str) -> None:
    with pytest.raises(CardNotRecognised, match=error):
        CardSession(Reader(_cert_link(content))).read_certificate()


def test_der_total_length() -> None:
    assert der_total_length(bytes.fromhex("3005")) == 7
    assert der_total_length(bytes.fromhex("3081C8")) == 203
    assert der_total_length(bytes.fromhex("30820101")) == 261
    with pytest.raises(CardNotRecognised):
        der_total_length(b"\x30")


def test_a_pulled_card_raises_card_removed() -> None:
    session = CardSession(Reader(DirectLink(SoftCard(gen3_card()), pull_after=2)))
    session.select()
    session.read_identification()
    with pytest.raises(CardRemoved):
        session.read_holder()


def test_challenge_and_context_lengths_are_checked() -> None:
    with pytest.raises(ValueError):
        CardSession(Reader(ScriptedLink({}))).internal_authenticate(b"x" * 31, bytes(32))
