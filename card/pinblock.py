"""The VERIFY PIN block: the PIN's digits packed BCD, padded with F to whole bytes (docs/card-protocol.md)."""

from __future__ import annotations

import re

PIN_MIN_DIGITS, PIN_MAX_DIGITS = 4, 12
_PIN = re.compile(r"[0-9]{4,12}")
_BLOCK = re.compile(r"([0-9]{4,12})F?")
BLOCK_MIN_LEN, BLOCK_MAX_LEN = 2, 6


class PinBlockError(ValueError):
    """Not a PIN block; `wrong_length` tells a bad Lc from a garbled block of a plausible length."""

    def __init__(self, message: str, *, wrong_length: bool = False) -> None:
        super().__init__(message)
        self.wrong_length = wrong_length


def is_valid_pin(pin: object) -> bool:
    return isinstance(pin, str) and _PIN.fullmatch(pin) is not None


def encode_pin_block(pin: str) -> bytes:
    if not is_valid_pin(pin):
        raise PinBlockError(f"a PIN is {PIN_MIN_DIGITS} to {PIN_MAX_DIGITS} digits")
    return bytes.fromhex(pin + "F" * (len(pin) % 2))


def decode_pin_block(block: bytes) -> str:
    if not BLOCK_MIN_LEN <= len(block) <= BLOCK_MAX_LEN:
        raise PinBlockError(f"a PIN block is {BLOCK_MIN_LEN} to {BLOCK_MAX_LEN} bytes", wrong_length=True)
    # Whole bytes make the hex even-length, so one trailing F is exactly the padding of an odd digit count.
    match = _BLOCK.fullmatch(block.hex().upper())
    if match is None:
        raise PinBlockError("garbled PIN block")
    return match.group(1)
