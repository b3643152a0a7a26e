"""Money is an integer number of fen (分, 1/100 yuan). Never a float, never a Decimal in storage.

Channels send yuan as text ("12.34"); this module is the one place where such text becomes fen and fen becomes
text again. Parsing is strict on purpose: a channel that sends "1e3", "12.345" or " 12.34" is either broken or
being forged, and either way the amount must not be guessed at. Callers strip their channel's own decoration first
(the backtick WeChat statements put before every field, say) and hand over only the number.
"""

from __future__ import annotations

import re

# The largest amount this service handles anywhere: under 10 billion yuan. Far above any contribution or daily
# statement total, and a million of them still sum inside a signed 64-bit column (PostgreSQL BIGINT).
MAX_FEN = 10**12 - 1

# ASCII digits only ([0-9], not \d: int() also accepts "١٢" and full-width "１２"), no leading zeros, no "+",
# no whitespace, one or two decimals if a dot is present. The integer part is bounded so that a megabyte of digits
# is refused by its shape, before any arithmetic.
_YUAN = re.compile(r"(-)?(0|[1-9][0-9]{0,11})(?:\.([0-9]{1,2}))?", re.ASCII)


class MoneyError(ValueError):
    """An amount that is not acceptable; the message says why (and never echoes more than a short prefix)."""


def _shown(text: str) -> str:
    return repr(text[:24] + ("..." if len(text) > 24 else ""))


def parse_yuan(text: str, *, signed: bool = False, exact_decimals: bool = False) -> int:
    """Fen from a yuan amount as channels write it: "12.34", "12.3", "12" (or exactly two decimals if
    `exact_decimals`, as Alipay's notify always sends). A minus sign only if `signed` (statements list refunds as
    negative amounts); "-0.00" is refused, a zero has no sign."""
    if not isinstance(text, str):
        # A float has already lost the amount (0.1 + 0.2), and an int is ambiguous (yuan or fen?).
        raise MoneyError(f"an amount must be text, not {type(text).__name__}")
    match = _YUAN.fullmatch(text)
    if match is None:
        raise MoneyError(f"not a yuan amount with at most two decimals: {_shown(text)}")
    sign, whole, decimals = match.groups()
    if exact_decimals and (decimals is None or len(decimals) != 2):
        raise MoneyError(f"a yuan amount must have exactly two decimals: {_shown(text)}")
    fen = int(whole) * 100 + int((decimals or "0").ljust(2, "0"))
    if sign:
        if not signed:
            raise MoneyError(f"a negative amount is not allowed here: {_shown(text)}")
        if fen == 0:
            raise MoneyError("a zero amount has no sign")
        fen = -fen
    if abs(fen) > MAX_FEN:
        raise MoneyError(f"amount out of range: {_shown(text)}")
    return fen


def check_fen(value: object, *, allow_zero: bool = False, allow_negative: bool = False) -> int:
    """`value` itself if it is an acceptable amount in fen: an int (not a bool, not a float), within MAX_FEN,
    more than zero unless told otherwise."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise MoneyError(f"an amount in fen must be an integer, not {type(value).__name__}")
    if abs(value) > MAX_FEN:
        raise MoneyError("amount out of range")
    if value < 0 and not allow_negative:
        raise MoneyError("a negative amount is not allowed here")
    if value == 0 and not allow_zero:
        raise MoneyError("the amount must be more than zero")
    return value


def format_yuan(fen: int) -> str:
    """The channels' text form of an amount in fen: always two decimals ("12.30", "-0.05")."""
    check_fen(fen, allow_zero=True, allow_negative=True)
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole}.{cents:02d}"
