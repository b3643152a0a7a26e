"""The card side of a kiosk login, command by command (docs/card-protocol.md, "A whole kiosk login").

Each method sends exactly the APDU of the doc's command table, so a 3rd-generation login costs 7 APDUs and a
2nd-generation (T=0) one 8. Failures come out as the exceptions of card.apdu (WrongPin, PinBlocked,
CardNotRecognised, CardError) or of card.reader (CardRemoved, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from card import cryptogram
from card.apdu import (
    SW_END_OF_FILE,
    SW_OK,
    SW_PIN_BLOCKED,
    SW_WRONG_PIN_BASE,
    CardError,
    CardNotRecognised,
    CommandAPDU,
    error_for_status,
)
from card.pinblock import encode_pin_block
from card.protocol import (
    AID,
    CLA,
    FIRST_RECORD_EF05,
    FIRST_RECORD_EF06,
    INS_INTERNAL_AUTHENTICATE,
    INS_READ_BINARY,
    INS_READ_RECORD,
    INS_SELECT,
    INS_VERIFY,
    RR_ALL_FROM,
    SELECT_NO_RESPONSE,
    SFI_EF05,
    SFI_EF06,
    SFI_EF07,
)
from card.records import CardIdentification, HolderData, RecordError

if TYPE_CHECKING:
    from card.reader import Reader

# READ BINARY offsets have 15 bits; a longer "certificate" is not one.
MAX_CERTIFICATE_LEN = 0x7FFF


def der_total_length(head: bytes) -> int:
    """Length of the DER SEQUENCE that starts `head` (header included), from its first bytes."""
    if len(head) < 2 or head[0] != 0x30:
        raise CardNotRecognised("card not recognised: EF07 does not hold a DER certificate")
    first = head[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if not 1 <= count <= 2 or len(head) < 2 + count:
        raise CardNotRecognised("card not recognised: EF07 certificate length is not usable")
    return 2 + count + int.from_bytes(head[2 : 2 + count], "big")


class CardSession:
    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    def _ok(self, command: CommandAPDU) -> bytes:
        response = self.reader.transmit(command)
        if response.sw != SW_OK:
            raise error_for_status(response.sw)
        return response.data

    def select(self) -> None:
        self._ok(CommandAPDU(CLA, INS_SELECT, 0x04, SELECT_NO_RESPONSE, AID))

    def _read_records(self, sfi: int, first: int) -> bytes:
        return self._ok(CommandAPDU(CLA, INS_READ_RECORD, first, (sfi << 3) | RR_ALL_FROM, le=256))

    def read_identification(self) -> tuple[bytes, CardIdentification]:
        raw = self._read_records(SFI_EF05, FIRST_RECORD_EF05)
        try:
            return raw, CardIdentification.decode(raw)
        except RecordError as exc:
            raise CardNotRecognised(f"card not recognised: {exc}") from exc

    def read_holder(self) -> tuple[bytes, HolderData]:
        raw = self._read_records(SFI_EF06, FIRST_RECORD_EF06)
        try:
            return raw, HolderData.decode(raw)
        except RecordError as exc:
            raise CardNotRecognised(f"card not recognised: {exc}") from exc

    def verify_pin(self, pin: str) -> None:
        """Raises WrongPin(tries_left) or PinBlocked; a malformed PIN is a ValueError before any APDU."""
        self._ok(CommandAPDU(CLA, INS_VERIFY, 0x00, 0x00, encode_pin_block(pin)))

    def pin_status(self) -> int | None:
        """None when the PIN was verified in this card session, else the tries left (0 = blocked)."""
        response = self.reader.transmit(CommandAPDU(CLA, INS_VERIFY, 0x00, 0x00))
        if response.sw == SW_OK:
            return None
        if response.sw == SW_PIN_BLOCKED:
            return 0
        if response.sw & 0xFFF0 == SW_WRONG_PIN_BASE:
            return response.sw & 0x0F
        raise error_for_status(response.sw)

    def internal_authenticate(self, challenge: bytes, context: bytes) -> bytes:
        """The card's `flags || cryptogram` over the challenge, the context and its files."""
        if len(challenge) != cryptogram.CHALLENGE_LEN or len(context) != cryptogram.CONTEXT_LEN:
            raise ValueError("challenge and context are 32 bytes each")
        data = self._ok(CommandAPDU(CLA, INS_INTERNAL_AUTHENTICATE, 0x00, 0x00, challenge + context, le=256))
        if len(data) < 2:
            raise CardError(f"card error: internal authenticate answered {len(data)} bytes")
        return data

    def _read_binary(self, p1: int, p2: int) -> tuple[bytes, bool]:
        response = self.reader.transmit(CommandAPDU(CLA, INS_READ_BINARY, p1, p2, le=256))
        if response.sw == SW_OK:
            return response.data, False
        if response.sw == SW_END_OF_FILE:
            return response.data, True
        raise error_for_status(response.sw)

    def read_certificate(self) -> bytes:
        """EF07's DER certificate, read until the DER's own length is satisfied (padding is ignored)."""
        cert, at_end = self._read_binary(0x80 | SFI_EF07, 0x00)
        total = der_total_length(cert)
        if total > MAX_CERTIFICATE_LEN:
            raise CardNotRecognised(f"card not recognised: a {total}-byte certificate is not plausible")
        while len(cert) < total:
            if at_end:
                raise CardNotRecognised("card not recognised: EF07 ends inside the certificate")
            part, at_end = self._read_binary(len(cert) >> 8, len(cert) & 0xFF)
            if not part:
                raise CardError("card error: READ BINARY returned no data")
            cert += part
        return cert[:total]
