"""Ledger account codes and their normal sides (pure).

An account's code says what it is; its normal side follows from the kind, so that a balance reads as a positive
number in the usual case:

| code | kind | normal side | meaning |
|---|---|---|---|
| `clearing:<channel>` | asset | debit | money a channel has taken from payers and owes us (settled to the bank later) |
| `fund:<type>:<region>` | liability | credit | contributions owed to an insurance fund of a region |
| `refunds:<channel>` | liability | credit | refunds accepted and sent to a channel, not yet confirmed by it |
| `suspense` / `suspense:<channel>` | liability | credit | money we cannot yet attribute (reconciliation, review) |
"""

from __future__ import annotations

import re
from enum import StrEnum


class Side(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"


class AccountError(ValueError):
    pass


_NAME = r"[a-z][a-z0-9_]{0,31}"
_SHAPES: dict[str, tuple[re.Pattern[str], Side]] = {
    "clearing": (re.compile(rf"clearing:{_NAME}", re.ASCII), Side.DEBIT),
    "fund": (re.compile(rf"fund:{_NAME}:[0-9]{{6}}", re.ASCII), Side.CREDIT),
    "refunds": (re.compile(rf"refunds:{_NAME}", re.ASCII), Side.CREDIT),
    "suspense": (re.compile(rf"suspense(?::{_NAME})?", re.ASCII), Side.CREDIT),
}


def normal_side(code: str) -> Side:
    """The normal side of a well-formed account code; AccountError for anything else, so that a typo never
    opens a new account."""
    if not isinstance(code, str):
        raise AccountError("an account code must be text")
    shape = _SHAPES.get(code.split(":", 1)[0])
    if shape is None or not shape[0].fullmatch(code):
        raise AccountError(f"not a ledger account code: {code[:64]!r}")
    return shape[1]


def clearing(channel: str) -> str:
    return _valid(f"clearing:{channel}")


def fund(insurance_type: str, region: str) -> str:
    return _valid(f"fund:{insurance_type}:{region}")


def refunds(channel: str) -> str:
    return _valid(f"refunds:{channel}")


def suspense(channel: str | None = None) -> str:
    return _valid(f"suspense:{channel}" if channel else "suspense")


def _valid(code: str) -> str:
    normal_side(code)
    return code
