"""The SSSE card application as a pure state machine: APDU bytes in, response bytes out.

docs/card-protocol.md is the specification. No sockets here (card/vpcd.py carries the bytes), so every
command and status word can be tested directly. Every input, however malformed, gets a status word.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from card import cryptogram
from card.apdu import (
    SW_CLA_NOT_SUPPORTED,
    SW_CONDITIONS_NOT_SATISFIED,
    SW_END_OF_FILE,
    SW_FILE_NOT_FOUND,
    SW_INCORRECT_P1P2,
    SW_INS_NOT_SUPPORTED,
    SW_OK,
    SW_PIN_BLOCKED,
    SW_RECORD_NOT_FOUND,
    SW_WRONG_LENGTH,
    SW_WRONG_OFFSET,
    APDUError,
    CommandAPDU,
    ResponseAPDU,
    sw_more_data,
    sw_wrong_le,
    sw_wrong_pin,
)
from card.cardfile import CardFile
from card.pinblock import PinBlockError, decode_pin_block
from card.protocol import (
    AID,
    CLA,
    FID_EF05,
    FID_EF06,
    FID_EF07,
    INS_GET_RESPONSE,
    INS_INTERNAL_AUTHENTICATE,
    INS_READ_BINARY,
    INS_READ_RECORD,
    INS_SELECT,
    INS_VERIFY,
    RR_ALL_FROM,
    RR_ONE,
    SELECT_FCI,
    SELECT_NO_RESPONSE,
    SFI_EF05,
    SFI_EF06,
    SFI_EF07,
    TAG_DF_NAME,
    TAG_FCI,
)
from card.tlv import decode_records, encode_ber

_IA_DATA_LEN = cryptogram.CHALLENGE_LEN + cryptogram.CONTEXT_LEN


def _atr(prefix: str, historical: bytes, *, tck: bool) -> bytes:
    atr = bytes.fromhex(prefix) + historical
    if tck:
        # TCK makes the XOR of T0..TCK zero; it is mandatory once T=1 is offered.
        check = 0
        for b in atr[1:]:
            check ^= b
        atr += bytes([check])
    return atr


ATR_GEN3 = _atr("3B888001", b"SSCARDG3", tck=True)
ATR_GEN2 = _atr("3B680000", b"SSCARDG2", tck=False)


class Structure(Enum):
    LINEAR = "linear"
    TRANSPARENT = "transparent"


@dataclass(frozen=True)
class _EF:
    fid: int
    sfi: int
    structure: Structure
    content: bytes

    def records(self) -> list[tuple[int, bytes]]:
        # Records were encoded by card.records, so this cannot fail; the tag is the record number.
        return decode_records(self.content)


def _sw(sw: int, data: bytes = b"") -> bytes:
    return ResponseAPDU.status(sw, data).encode()


class SoftCard:
    """One card: its files and secrets from a CardFile, plus the volatile state of a card session."""

    def __init__(self, cardfile: CardFile, persist: Callable[[CardFile], None] | None = None) -> None:
        self.cardfile = cardfile
        self._persist = persist
        self.t0 = cardfile.protocol == "T=0"
        self.ef05 = cardfile.identification.encode()
        self.ef06 = cardfile.holder.encode()
        files = [
            _EF(FID_EF05, SFI_EF05, Structure.LINEAR, self.ef05),
            _EF(FID_EF06, SFI_EF06, Structure.LINEAR, self.ef06),
        ]
        if cardfile.gen3 is not None:
            files.append(_EF(FID_EF07, SFI_EF07, Structure.TRANSPARENT, cardfile.gen3.certificate_der))
        self._by_fid = {f.fid: f for f in files}
        self._by_sfi = {f.sfi: f for f in files}
        self._fci = encode_ber(TAG_FCI, encode_ber(TAG_DF_NAME, AID))
        self.powered = False
        self.reset()

    # -- power -----------------------------------------------------------------------------------------------

    def atr(self) -> bytes:
        return ATR_GEN3 if self.cardfile.generation == 3 else ATR_GEN2

    def power_on(self) -> None:
        self.powered = True
        self._clear_session()

    def power_off(self) -> None:
        self.powered = False
        self._clear_session()

    def reset(self) -> None:
        self.powered = True
        self._clear_session()

    def _clear_session(self) -> None:
        self.app_selected = False
        self.pin_verified = False
        self._current: _EF | None = None
        self._pending = b""

    # -- dispatch --------------------------------------------------------------------------------------------

    def process(self, apdu: bytes) -> bytes:
        """Answer one command APDU (bytes) with a response APDU (bytes)."""
        pending, self._pending = self._pending, b""  # only an immediately following GET RESPONSE may fetch it
        try:
            command = CommandAPDU.decode(apdu)
        except APDUError:
            return _sw(SW_WRONG_LENGTH)
        if command.cla != CLA:
            return _sw(SW_CLA_NOT_SUPPORTED)
        if command.ins == INS_GET_RESPONSE:
            return self._get_response(command, pending)
        handler = self._handlers.get(command.ins)
        if handler is None:
            return _sw(SW_INS_NOT_SUPPORTED)
        if command.ins != INS_SELECT and not self.app_selected:
            return _sw(SW_CONDITIONS_NOT_SATISFIED)
        return handler(self, command)

    # -- response shaping for T=0 and T=1 --------------------------------------------------------------------

    def _case4(self, command: CommandAPDU, data: bytes) -> bytes:
        """Answer a command that carries data and returns data."""
        # T=0 cannot return data to a case-4 command; neither can any card when the command had no Le.
        if self.t0 or command.le is None:
            return self._offer(data)
        if len(data) <= command.le:
            return _sw(SW_OK, data)
        self._pending = data[command.le :]
        return _sw(sw_more_data(len(self._pending)), data[: command.le])

    def _offer(self, data: bytes) -> bytes:
        self._pending = data
        return _sw(sw_more_data(len(data)))

    def _record_answer(self, command: CommandAPDU, data: bytes) -> bytes:
        """Case 2 where the answer is a unit (records): T=0 insists on the exact Le."""
        assert command.le is not None
        le_is_wildcard = command.le == 256
        if self.t0:
            if command.le != len(data):
                return _sw(sw_wrong_le(len(data)))
            return _sw(SW_OK, data)
        if le_is_wildcard or command.le == len(data):
            return _sw(SW_OK, data)
        if command.le > len(data):
            return _sw(SW_END_OF_FILE, data)
        return _sw(sw_wrong_le(len(data)))

    # -- SELECT ----------------------------------------------------------------------------------------------

    def _select(self, command: CommandAPDU) -> bytes:
        if command.case not in (3, 4):
            return _sw(SW_WRONG_LENGTH)
        if command.p1 == 0x04:
            if command.p2 not in (SELECT_FCI, SELECT_NO_RESPONSE):
                return _sw(SW_INCORRECT_P1P2)
            if command.data != AID:
                # A failed SELECT leaves the previous selection as it was (ISO 7816-4).
                return _sw(SW_FILE_NOT_FOUND)
            self.app_selected = True
            self._current = None
            return _sw(SW_OK) if command.p2 == SELECT_NO_RESPONSE else self._case4(command, self._fci)
        if command.p1 == 0x02:
            if command.p2 != SELECT_NO_RESPONSE:
                return _sw(SW_INCORRECT_P1P2)
            if not self.app_selected:
                return _sw(SW_CONDITIONS_NOT_SATISFIED)
            if len(command.data) != 2:
                return _sw(SW_WRONG_LENGTH)
            ef = self._by_fid.get(int.from_bytes(command.data, "big"))
            if ef is None:
                return _sw(SW_FILE_NOT_FOUND)
            self._current = ef
            return _sw(SW_OK)
        return _sw(SW_INCORRECT_P1P2)

    def _resolve(self, sfi: int, structure: Structure) -> _EF | bytes:
        """The EF named by an SFI (0 = current EF), or the status word to answer."""
        if sfi == 0:
            if self._current is None or self._current.structure is not structure:
                return _sw(SW_CONDITIONS_NOT_SATISFIED)
            return self._current
        ef = self._by_sfi.get(sfi)
        # An SFI that names no file of this structure is, for this command, no file at all.
        if ef is None or ef.structure is not structure:
            return _sw(SW_FILE_NOT_FOUND)
        self._current = ef
        return ef

    # -- READ RECORD -----------------------------------------------------------------------------------------

    def _read_record(self, command: CommandAPDU) -> bytes:
        if command.case != 2:
            return _sw(SW_WRONG_LENGTH)
        sfi, mode = command.p2 >> 3, command.p2 & 0b111
        if mode not in (RR_ONE, RR_ALL_FROM) or sfi == 0x1F or command.p1 in (0x00, 0xFF):
            return _sw(SW_INCORRECT_P1P2)
        ef = self._resolve(sfi, Structure.LINEAR)
        if isinstance(ef, bytes):
            return ef
        if mode == RR_ONE:
            chosen = [(tag, value) for tag, value in ef.records() if tag == command.p1]
        else:
            chosen = [(tag, value) for tag, value in ef.records() if tag >= command.p1]
        if not chosen:
            return _sw(SW_RECORD_NOT_FOUND)
        data = b"".join(bytes([tag, len(value)]) + value for tag, value in chosen)
        return self._record_answer(command, data)

    # -- READ BINARY -----------------------------------------------------------------------------------------

    def _read_binary(self, command: CommandAPDU) -> bytes:
        if command.case != 2:
            return _sw(SW_WRONG_LENGTH)
        assert command.le is not None
        if command.p1 & 0x80:
            if command.p1 & 0x60 or not command.p1 & 0x1F:
                return _sw(SW_INCORRECT_P1P2)
            sfi, offset = command.p1 & 0x1F, command.p2
        else:
            sfi, offset = 0, (command.p1 << 8) | command.p2
        ef = self._resolve(sfi, Structure.TRANSPARENT)
        if isinstance(ef, bytes):
            return ef
        if offset >= len(ef.content):
            return _sw(SW_WRONG_OFFSET)
        # A transparent file is read through a window: asking for fewer bytes than remain is normal.
        available = min(len(ef.content) - offset, 256)
        if command.le <= available:
            return _sw(SW_OK, ef.content[offset : offset + command.le])
        if self.t0:
            return _sw(sw_wrong_le(available))
        return _sw(SW_END_OF_FILE, ef.content[offset : offset + available])

    # -- VERIFY ----------------------------------------------------------------------------------------------

    def _verify(self, command: CommandAPDU) -> bytes:
        if command.p1 != 0x00 or command.p2 != 0x00:
            return _sw(SW_INCORRECT_P1P2)
        if command.case not in (1, 3):
            return _sw(SW_WRONG_LENGTH)
        card = self.cardfile
        if card.tries_left == 0:
            return _sw(SW_PIN_BLOCKED)
        if command.case == 1:
            return _sw(SW_OK) if self.pin_verified else _sw(sw_wrong_pin(card.tries_left))
        try:
            pin = decode_pin_block(command.data)
        except PinBlockError as exc:
            if exc.wrong_length:
                return _sw(SW_WRONG_LENGTH)
            pin = None  # a garbled block is a failed attempt: no free probing of the counter
        if pin is not None and card.check_pin(pin):
            self.pin_verified = True
            if card.tries_left != card.max_tries:
                card.tries_left = card.max_tries
                self._save()
            return _sw(SW_OK)
        self.pin_verified = False
        card.tries_left -= 1
        # Persist before answering: pulling the card on seeing 63Cx must not give the try back.
        self._save()
        return _sw(SW_PIN_BLOCKED) if card.tries_left == 0 else _sw(sw_wrong_pin(card.tries_left))

    def _save(self) -> None:
        if self._persist is not None:
            self._persist(self.cardfile)

    # -- INTERNAL AUTHENTICATE -------------------------------------------------------------------------------

    def _internal_authenticate(self, command: CommandAPDU) -> bytes:
        if command.p1 != 0x00 or command.p2 != 0x00:
            return _sw(SW_INCORRECT_P1P2)
        if command.case not in (3, 4) or len(command.data) != _IA_DATA_LEN:
            return _sw(SW_WRONG_LENGTH)
        flags = cryptogram.FLAG_PIN_VERIFIED if self.pin_verified else 0
        message = cryptogram.auth_message(
            challenge=command.data[: cryptogram.CHALLENGE_LEN],
            context=command.data[cryptogram.CHALLENGE_LEN :],
            digest=cryptogram.files_digest(self.ef05, self.ef06),
            flags=flags,
        )
        card = self.cardfile
        if card.gen3 is not None:
            mac = cryptogram.sign_message(card.gen3.private_key, message)
        else:
            assert card.gen2 is not None
            mac = cryptogram.symmetric_cryptogram(card.gen2.key, card.gen2.algorithm, message)
        return self._case4(command, bytes([flags]) + mac)

    # -- GET RESPONSE ----------------------------------------------------------------------------------------

    def _get_response(self, command: CommandAPDU, pending: bytes) -> bytes:
        if command.p1 != 0x00 or command.p2 != 0x00:
            self._pending = pending
            return _sw(SW_INCORRECT_P1P2)
        if command.case != 2:
            self._pending = pending
            return _sw(SW_WRONG_LENGTH)
        if not pending:
            return _sw(SW_CONDITIONS_NOT_SATISFIED)
        assert command.le is not None
        if command.le < len(pending):
            self._pending = pending[command.le :]
            return _sw(sw_more_data(len(self._pending)), pending[: command.le])
        if command.le > len(pending) and self.t0:
            self._pending = pending
            return _sw(sw_wrong_le(len(pending)))
        return _sw(SW_OK, pending)

    _handlers: ClassVar[dict[int, Callable[[SoftCard, CommandAPDU], bytes]]] = {
        INS_SELECT: _select,
        INS_READ_RECORD: _read_record,
        INS_READ_BINARY: _read_binary,
        INS_VERIFY: _verify,
        INS_INTERNAL_AUTHENTICATE: _internal_authenticate,
    }
