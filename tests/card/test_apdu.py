from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from card.apdu import (
    SW_OK,
    APDUError,
    CardError,
    CardNotRecognised,
    CardStatusError,
    CommandAPDU,
    PinBlocked,
    ResponseAPDU,
    WrongPin,
    error_for_status,
    sw_more_data,
    sw_wrong_le,
    sw_wrong_pin,
)
from tests.card.factories import vectors

APDUS = vectors("apdus")


@pytest.mark.parametrize("vector", APDUS["valid"], ids=lambda v: v["hex"][:16])
def test_known_apdus_encode_and_decode(vector: dict[str, Any]) -> None:
    command = CommandAPDU(
        vector["cla"], vector["ins"], vector["p1"], vector["p2"], bytes.fromhex(vector["data"]), vector["le"]
    )
    assert command.encode() == bytes.fromhex(vector["hex"])
    assert CommandAPDU.decode(bytes.fromhex(vector["hex"])) == command
    assert command.case == vector["case"]


@pytest.mark.parametrize("vector", APDUS["invalid"], ids=lambda v: v["why"])
def test_malformed_apdus_raise_apdu_error(vector: dict[str, Any]) -> None:
    with pytest.raises(APDUError):
        CommandAPDU.decode(bytes.fromhex(vector["hex"]))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cla": 256},
        {"ins": -1},
        {"p1": "0"},
        {"data": bytes(256)},
        {"data": bytearray(b"x")},
        {"le": 0},
        {"le": 257},
    ],
)
def test_command_fields_are_validated(kwargs: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"cla": 0, "ins": 0xA4, "p1": 0, "p2": 0, **kwargs}
    with pytest.raises(APDUError):
        CommandAPDU(**fields)


def test_le_256_is_sent_as_00_and_with_le_changes_only_le() -> None:
    command = CommandAPDU(0x00, 0xB2, 0x01, 0x2D, le=256)
    assert command.encode() == bytes.fromhex("00B2012D00")
    assert command.with_le(0x4A).encode() == bytes.fromhex("00B2012D4A")
    assert str(command) == "00 B2 01 2D 00"


commands = st.builds(
    CommandAPDU,
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=255),
    st.none() | st.integers(1, 256),
)


@given(commands)
def test_commands_round_trip(command: CommandAPDU) -> None:
    assert CommandAPDU.decode(command.encode()) == command


@given(st.binary(max_size=270))
def test_arbitrary_bytes_decode_canonically_or_raise_apdu_error(raw: bytes) -> None:
    try:
        command = CommandAPDU.decode(raw)
    except APDUError:
        return
    assert command.encode() == raw


def test_responses() -> None:
    response = ResponseAPDU.decode(bytes.fromhex("01029000"))
    assert response == ResponseAPDU(b"\x01\x02", 0x90, 0x00)
    assert response.sw == SW_OK and response.ok and response.encode() == bytes.fromhex("01029000")
    assert ResponseAPDU.status(0x6A82).encode() == bytes.fromhex("6A82")
    assert str(ResponseAPDU.status(0x6282, b"\xab")) == "AB 6282"
    with pytest.raises(APDUError):
        ResponseAPDU.decode(b"\x90")
    with pytest.raises(APDUError):
        ResponseAPDU(b"", 0x100, 0)


def test_status_word_builders() -> None:
    assert sw_more_data(9) == 0x6109 and sw_more_data(256) == 0x6100
    assert sw_wrong_le(0x4A) == 0x6C4A and sw_wrong_le(256) == 0x6C00
    assert sw_wrong_pin(2) == 0x63C2 and sw_wrong_pin(99) == 0x63CF


# The doc's status word table: SW, exception, the kiosk's message.
@pytest.mark.parametrize(
    ("sw", "kind", "message"),
    [
        (0x63C2, WrongPin, "wrong PIN, 2 tries left"),
        (0x63C1, WrongPin, "wrong PIN, 1 tries left"),
        (0x63C0, PinBlocked, "PIN blocked"),
        (0x6983, PinBlocked, "PIN blocked"),
        (0x6700, CardError, "card error"),
        (0x6982, CardError, "card error"),
        (0x6985, CardError, "card error"),
        (0x6A86, CardError, "card error"),
        (0x6B00, CardError, "card error"),
        (0x6A82, CardNotRecognised, "card not recognised"),
        (0x6A83, CardNotRecognised, "card not recognised"),
        (0x6D00, CardNotRecognised, "card not recognised"),
        (0x6E00, CardNotRecognised, "card not recognised"),
        (0x6F00, CardError, "card error"),
    ],
)
def test_status_words_map_to_the_kiosk_messages(sw: int, kind: type[CardStatusError], message: str) -> None:
    error = error_for_status(sw)
    assert type(error) is kind and error.sw == sw
    assert str(error).startswith(message)
    if isinstance(error, WrongPin):
        assert error.tries_left == sw & 0xF
    with pytest.raises(kind):
        ResponseAPDU.status(sw).raise_for_status()


def test_a_success_does_not_raise() -> None:
    ResponseAPDU.status(SW_OK).raise_for_status()
