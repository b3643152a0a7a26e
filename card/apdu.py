"""Short command/response APDUs and the card's status words: the one place that knows what an SW means.

docs/card-protocol.md, "Status words", is the table implemented by `SW_*`, `error_for_status` and the
exception classes below; the kiosk shows `str(exception)` to the citizen.
"""

from __future__ import annotations

from dataclasses import dataclass


class APDUError(ValueError):
    """A malformed or invalid APDU."""


# -- status words -------------------------------------------------------------------------------------

SW_OK = 0x9000
SW_END_OF_FILE = 0x6282
SW_WRONG_LENGTH = 0x6700
SW_SECURITY_NOT_SATISFIED = 0x6982
SW_PIN_BLOCKED = 0x6983
SW_CONDITIONS_NOT_SATISFIED = 0x6985
SW_FILE_NOT_FOUND = 0x6A82
SW_RECORD_NOT_FOUND = 0x6A83
SW_INCORRECT_P1P2 = 0x6A86
SW_WRONG_OFFSET = 0x6B00
SW_INS_NOT_SUPPORTED = 0x6D00
SW_CLA_NOT_SUPPORTED = 0x6E00
# Families whose second byte carries a number.
SW1_MORE_DATA = 0x61
SW1_WRONG_LE = 0x6C
SW_WRONG_PIN_BASE = 0x63C0  # | tries left (0-F)


def sw_more_data(count: int) -> int:
    """61xx; xx = 00 stands for 256 (or more) bytes."""
    return (SW1_MORE_DATA << 8) | (count & 0xFF if count < 256 else 0)


def sw_wrong_le(count: int) -> int:
    return (SW1_WRONG_LE << 8) | (count & 0xFF if count < 256 else 0)


def sw_wrong_pin(tries_left: int) -> int:
    return SW_WRONG_PIN_BASE | min(tries_left, 0xF)


# -- errors the card reports, with the kiosk's wording -----------------------------------------------------


class CardStatusError(Exception):
    """The card answered a status word that means failure."""

    def __init__(self, message: str, sw: int | None = None) -> None:
        super().__init__(message)
        self.sw = sw


class CardError(CardStatusError):
    """The card refused a command it should have accepted (length, P1/P2, state): a card or kiosk fault."""


class CardNotRecognised(CardStatusError):
    """The card is not an sscard social security card (no application, no such file or record, bad data)."""


class WrongPin(CardStatusError):
    def __init__(self, tries_left: int, sw: int | None = None) -> None:
        # The doc's wording, kept literal (also for 1) so that kiosk scripts can match it.
        super().__init__(f"wrong PIN, {tries_left} tries left", sw)
        self.tries_left = tries_left


class PinBlocked(CardStatusError):
    def __init__(self, sw: int | None = None) -> None:
        super().__init__("PIN blocked", sw)


_MEANING: dict[int, tuple[type[CardStatusError], str]] = {
    SW_WRONG_LENGTH: (CardError, "wrong length"),
    SW_SECURITY_NOT_SATISFIED: (CardError, "security status not satisfied"),
    SW_CONDITIONS_NOT_SATISFIED: (CardError, "conditions of use not satisfied"),
    SW_INCORRECT_P1P2: (CardError, "incorrect P1 P2"),
    SW_WRONG_OFFSET: (CardError, "offset beyond the end of the file"),
    SW_FILE_NOT_FOUND: (CardNotRecognised, "file or application not found"),
    SW_RECORD_NOT_FOUND: (CardNotRecognised, "record not found"),
    SW_INS_NOT_SUPPORTED: (CardNotRecognised, "instruction not supported"),
    SW_CLA_NOT_SUPPORTED: (CardNotRecognised, "class not supported"),
}


def error_for_status(sw: int) -> CardStatusError:
    """The exception for a failure status word (the caller decides which SWs are failures)."""
    if sw == SW_PIN_BLOCKED:
        return PinBlocked(sw)
    if sw & 0xFFF0 == SW_WRONG_PIN_BASE:
        tries = sw & 0x0F
        # 63C0 is how some cards say "that was the last try"; for the citizen it is a blocked PIN.
        return WrongPin(tries, sw) if tries else PinBlocked(sw)
    kind, meaning = _MEANING.get(sw, (CardError, "unexpected status"))
    prefix = "card not recognised" if kind is CardNotRecognised else "card error"
    return kind(f"{prefix}: {meaning} (SW {sw:04X})", sw)


# -- APDUs ------------------------------------------------------------------------------------------------


def _byte(name: str, value: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise APDUError(f"{name} must be one byte, got {value!r}")


@dataclass(frozen=True)
class CommandAPDU:
    """A short APDU; `le` is Ne (1-256), None when no response data is expected."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            _byte(name, getattr(self, name))
        if not isinstance(self.data, bytes):
            raise APDUError("data must be bytes")
        if len(self.data) > 255:
            raise APDUError(f"{len(self.data)} bytes of data do not fit a short APDU")
        if self.le is not None and (not isinstance(self.le, int) or not 1 <= self.le <= 256):
            raise APDUError(f"Le must be 1-256 (256 is sent as 00), got {self.le!r}")

    @property
    def case(self) -> int:
        if self.data:
            return 4 if self.le is not None else 3
        return 2 if self.le is not None else 1

    def encode(self) -> bytes:
        out = bytes([self.cla, self.ins, self.p1, self.p2])
        if self.data:
            out += bytes([len(self.data)]) + self.data
        if self.le is not None:
            out += bytes([self.le & 0xFF])
        return out

    @classmethod
    def decode(cls, raw: bytes) -> CommandAPDU:
        raw = bytes(raw)
        if len(raw) < 4:
            raise APDUError(f"an APDU has at least 4 bytes, got {len(raw)}")
        cla, ins, p1, p2 = raw[:4]
        body = raw[4:]
        if not body:
            return cls(cla, ins, p1, p2)
        if len(body) == 1:
            return cls(cla, ins, p1, p2, le=body[0] or 256)
        lc = body[0]
        if lc == 0:
            raise APDUError("extended-length APDUs are not supported")
        if len(body) == 1 + lc:
            return cls(cla, ins, p1, p2, data=body[1:])
        if len(body) == 2 + lc:
            return cls(cla, ins, p1, p2, data=body[1:-1], le=body[-1] or 256)
        raise APDUError(f"Lc {lc} does not match the {len(body) - 1} bytes that follow")

    def with_le(self, le: int) -> CommandAPDU:
        return CommandAPDU(self.cla, self.ins, self.p1, self.p2, self.data, le)

    def __str__(self) -> str:
        return self.encode().hex(" ").upper()


@dataclass(frozen=True)
class ResponseAPDU:
    data: bytes
    sw1: int
    sw2: int

    def __post_init__(self) -> None:
        _byte("sw1", self.sw1)
        _byte("sw2", self.sw2)

    @property
    def sw(self) -> int:
        return (self.sw1 << 8) | self.sw2

    @property
    def ok(self) -> bool:
        return self.sw == SW_OK

    def encode(self) -> bytes:
        return bytes(self.data) + bytes([self.sw1, self.sw2])

    @classmethod
    def decode(cls, raw: bytes) -> ResponseAPDU:
        raw = bytes(raw)
        if len(raw) < 2:
            raise APDUError(f"a response has at least the 2 status bytes, got {len(raw)}")
        return cls(raw[:-2], raw[-2], raw[-1])

    @classmethod
    def status(cls, sw: int, data: bytes = b"") -> ResponseAPDU:
        return cls(data, sw >> 8, sw & 0xFF)

    def raise_for_status(self) -> None:
        if not self.ok:
            raise error_for_status(self.sw)

    def __str__(self) -> str:
        return f"{self.data.hex().upper()} {self.sw:04X}".strip()
