"""EF05 (card identification) and EF06 (holder data): the records, their encoding and strict validation.

The server decodes these from bytes a kiosk sent, so `decode` treats its input as hostile: it accepts only
the exact shape docs/card-protocol.md describes and raises nothing but `RecordError`. Decoding is
canonical: `X.decode(data).encode() == data` for every accepted `data`, which lets the server hash what it
received and reason about the same bytes it parsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from card.tlv import TLVError, decode_records, encode_record


class RecordError(ValueError):
    """A card record is malformed or a field is out of its allowed shape."""


_IDENT_CODE = re.compile(r"[0-9]{6}D156000005[0-9A-F]{16}")
_ISSUER_ORG = re.compile(r"[0-9A-Z]{1,16}")
_CARD_NUMBER = re.compile(r"[A-Z][0-9]{8}")
_SSN = re.compile(r"[0-9]{17}[0-9X]")
_NATION = re.compile(r"[0-9]{2}")
CARD_TYPES = ("1",)
SPEC_VERSIONS = ("2.00", "3.00")
SEXES = ("0", "1", "2", "9")
NAME_MAX_BYTES = 30
NAME_ENCODING = "gb18030"

# Record tags (= record numbers) per file.
T_IDENT_CODE, T_CARD_TYPE, T_SPEC_VERSION, T_ISSUER_ORG, T_ISSUED_ON, T_EXPIRES_ON, T_CARD_NUMBER = range(1, 8)
T_SSN, T_NAME, T_SEX, T_NATION, T_BIRTH_DATE = 0x08, 0x09, 0x0A, 0x0B, 0x0D


# -- field helpers -----------------------------------------------------------------------------------------


def _text(field: str, value: Any, pattern: re.Pattern[str]) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise RecordError(f"{field}: {value!r} does not have the required format")


def _choice(field: str, value: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise RecordError(f"{field}: {value!r} is not one of {', '.join(allowed)}")


def _date(field: str, value: Any) -> None:
    # datetime is a date subclass; a timestamp here would encode to the same bytes yet compare differently.
    if type(value) is not date:
        raise RecordError(f"{field}: expected a date, got {type(value).__name__}")


def encode_bcd_date(value: date) -> bytes:
    return bytes.fromhex(f"{value.year:04d}{value.month:02d}{value.day:02d}")


def decode_bcd_date(field: str, raw: bytes) -> date:
    if len(raw) != 4:
        raise RecordError(f"{field}: a BCD date is 4 bytes, got {len(raw)}")
    digits = raw.hex()
    if not digits.isdigit():
        raise RecordError(f"{field}: {digits.upper()} is not BCD")
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError as exc:
        raise RecordError(f"{field}: {digits} is not a calendar date") from exc


def _ascii(field: str, raw: bytes) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise RecordError(f"{field}: not ASCII") from exc


def _encode_name(name: Any) -> bytes:
    if not isinstance(name, str) or not name:
        raise RecordError("name: must be a non-empty string")
    # Control characters and edge spaces have no place in a name and would end up in logs and tokens.
    if not name.isprintable() or name != name.strip():
        raise RecordError(f"name: {name!r} contains control characters or leading/trailing spaces")
    try:
        raw = name.encode(NAME_ENCODING)
    except UnicodeEncodeError as exc:
        raise RecordError(f"name: {name!r} cannot be written in GB 18030") from exc
    if len(raw) > NAME_MAX_BYTES:
        raise RecordError(f"name: {len(raw)} bytes in GB 18030, at most {NAME_MAX_BYTES}")
    return raw


def _decode_name(raw: bytes) -> str:
    try:
        name = raw.decode(NAME_ENCODING)
    except UnicodeDecodeError as exc:
        raise RecordError("name: not valid GB 18030") from exc
    if _encode_name(name) != raw:
        raise RecordError("name: not in canonical GB 18030 form")
    return name


def _split(data: Any, allowed: tuple[int, ...], what: str) -> dict[int, bytes]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RecordError(f"{what}: expected bytes, got {type(data).__name__}")
    try:
        records = decode_records(bytes(data))
    except TLVError as exc:
        raise RecordError(f"{what}: {exc}") from exc
    fields: dict[int, bytes] = {}
    last = -1
    for tag, value in records:
        if tag not in allowed:
            raise RecordError(f"{what}: unexpected record {tag:02X}")
        if tag <= last:
            raise RecordError(f"{what}: record {tag:02X} repeated or out of ascending order")
        last = tag
        fields[tag] = value
    return fields


def _required(fields: dict[int, bytes], tag: int, what: str) -> bytes:
    if tag not in fields:
        raise RecordError(f"{what}: record {tag:02X} missing")
    return fields[tag]


# -- EF05 ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CardIdentification:
    identification_code: str
    card_type: str
    spec_version: str
    issuer_org: str
    issued_on: date
    expires_on: date
    card_number: str

    def __post_init__(self) -> None:
        _text("identification_code", self.identification_code, _IDENT_CODE)
        _choice("card_type", self.card_type, CARD_TYPES)
        _choice("spec_version", self.spec_version, SPEC_VERSIONS)
        _text("issuer_org", self.issuer_org, _ISSUER_ORG)
        _date("issued_on", self.issued_on)
        _date("expires_on", self.expires_on)
        if self.expires_on < self.issued_on:
            raise RecordError(f"expires_on {self.expires_on} is before issued_on {self.issued_on}")
        _text("card_number", self.card_number, _CARD_NUMBER)

    @property
    def generation(self) -> int:
        return int(self.spec_version[0])

    def encode(self) -> bytes:
        return b"".join(
            [
                encode_record(T_IDENT_CODE, self.identification_code.encode("ascii")),
                encode_record(T_CARD_TYPE, self.card_type.encode("ascii")),
                encode_record(T_SPEC_VERSION, self.spec_version.encode("ascii")),
                encode_record(T_ISSUER_ORG, self.issuer_org.encode("ascii")),
                encode_record(T_ISSUED_ON, encode_bcd_date(self.issued_on)),
                encode_record(T_EXPIRES_ON, encode_bcd_date(self.expires_on)),
                encode_record(T_CARD_NUMBER, self.card_number.encode("ascii")),
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> CardIdentification:
        what = "EF05"
        f = _split(data, tuple(range(T_IDENT_CODE, T_CARD_NUMBER + 1)), what)
        return cls(
            identification_code=_ascii("identification_code", _required(f, T_IDENT_CODE, what)),
            card_type=_ascii("card_type", _required(f, T_CARD_TYPE, what)),
            spec_version=_ascii("spec_version", _required(f, T_SPEC_VERSION, what)),
            issuer_org=_ascii("issuer_org", _required(f, T_ISSUER_ORG, what)),
            issued_on=decode_bcd_date("issued_on", _required(f, T_ISSUED_ON, what)),
            expires_on=decode_bcd_date("expires_on", _required(f, T_EXPIRES_ON, what)),
            card_number=_ascii("card_number", _required(f, T_CARD_NUMBER, what)),
        )


# -- EF06 ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HolderData:
    ssn: str
    name: str
    sex: str
    nation: str | None
    birth_date: date

    def __post_init__(self) -> None:
        _text("ssn", self.ssn, _SSN)
        _encode_name(self.name)
        _choice("sex", self.sex, SEXES)
        if self.nation is not None:
            _text("nation", self.nation, _NATION)
        _date("birth_date", self.birth_date)

    def encode(self) -> bytes:
        parts = [
            encode_record(T_SSN, self.ssn.encode("ascii")),
            encode_record(T_NAME, _encode_name(self.name)),
            encode_record(T_SEX, self.sex.encode("ascii")),
        ]
        if self.nation is not None:
            parts.append(encode_record(T_NATION, self.nation.encode("ascii")))
        parts.append(encode_record(T_BIRTH_DATE, encode_bcd_date(self.birth_date)))
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> HolderData:
        what = "EF06"
        f = _split(data, (T_SSN, T_NAME, T_SEX, T_NATION, T_BIRTH_DATE), what)
        nation = f.get(T_NATION)
        return cls(
            ssn=_ascii("ssn", _required(f, T_SSN, what)),
            name=_decode_name(_required(f, T_NAME, what)),
            sex=_ascii("sex", _required(f, T_SEX, what)),
            nation=None if nation is None else _ascii("nation", nation),
            birth_date=decode_bcd_date("birth_date", _required(f, T_BIRTH_DATE, what)),
        )
