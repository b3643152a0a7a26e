"""Social security numbers: the 18-character citizen identity number of GB 11643-1999 (ISO 7064 MOD 11-2)."""

from __future__ import annotations

import re
from datetime import date

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_SHAPE = re.compile(r"[1-9]\d{16}[\dX]")


class InvalidSSN(ValueError):
    pass


def check_character(first17: str) -> str:
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def normalize(value: str, *, today: date | None = None) -> str:
    """The canonical form (upper-case X) of a valid number; InvalidSSN with the reason otherwise."""
    if not isinstance(value, str):
        raise InvalidSSN("must be a string")
    ssn = value.strip().upper()
    if not _SHAPE.fullmatch(ssn):
        raise InvalidSSN("must be 17 digits and a check character (digit or X)")
    if check_character(ssn[:17]) != ssn[17]:
        raise InvalidSSN("check character does not match (GB 11643)")
    try:
        born = date(int(ssn[6:10]), int(ssn[10:12]), int(ssn[12:14]))
    except ValueError as exc:
        raise InvalidSSN("birth date inside the number is not a date") from exc
    if born > (today or date.today()) or born.year < 1880:
        raise InvalidSSN("birth date inside the number is out of range")
    return ssn


def birth_date(ssn: str) -> date:
    return date(int(ssn[6:10]), int(ssn[10:12]), int(ssn[12:14]))


def sex(ssn: str) -> str:
    """GB/T 2261.1 code from the sequence number's parity: 1 male, 2 female."""
    return "1" if int(ssn[16]) % 2 else "2"


def mask(ssn: str) -> str:
    """For logs and displays: region and last four only (110105********123X)."""
    if len(ssn) != 18:
        return "*" * len(ssn)
    return ssn[:6] + "*" * 8 + ssn[14:]
