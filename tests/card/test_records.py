from __future__ import annotations

import datetime as dt
from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from card.records import CardIdentification, HolderData, RecordError
from tests.card.factories import holder, identification, vectors

RECORDS = vectors("records")


def _fields(doc: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    for key in ("issued_on", "expires_on", "birth_date"):
        if key in out:
            out[key] = date.fromisoformat(out[key])
    return out


@pytest.mark.parametrize("vector", RECORDS["ef05"], ids=lambda v: v["name"])
def test_ef05_known_answers(vector: dict[str, Any]) -> None:
    record = CardIdentification(**_fields(vector["fields"]))
    raw = bytes.fromhex(vector["hex"])
    assert record.encode() == raw
    assert CardIdentification.decode(raw) == record
    assert record.generation == int(vector["fields"]["spec_version"][0])


@pytest.mark.parametrize("vector", RECORDS["ef06"], ids=lambda v: v["name"])
def test_ef06_known_answers(vector: dict[str, Any]) -> None:
    record = HolderData(**_fields(vector["fields"]))
    raw = bytes.fromhex(vector["hex"])
    assert record.encode() == raw
    assert HolderData.decode(raw) == record


@pytest.mark.parametrize("vector", RECORDS["ef05_invalid"], ids=lambda v: v["why"])
def test_ef05_malformed(vector: dict[str, Any]) -> None:
    with pytest.raises(RecordError, match=vector["error"]):
        CardIdentification.decode(bytes.fromhex(vector["hex"]))


@pytest.mark.parametrize("vector", RECORDS["ef06_invalid"], ids=lambda v: v["why"])
def test_ef06_malformed(vector: dict[str, Any]) -> None:
    with pytest.raises(RecordError, match=vector["error"]):
        HolderData.decode(bytes.fromhex(vector["hex"]))


@pytest.mark.parametrize(
    "changes",
    [
        {"identification_code": "110100D1560000050123456789ABCDE"},
        {"identification_code": "110100D1560000060123456789ABCDEF"},
        {"identification_code": "１10100D1560000050123456789ABCDEF"},  # a full-width digit is no digit here
        {"card_type": 1},
        {"spec_version": "3.0"},
        {"issuer_org": ""},
        {"issuer_org": "A" * 17},
        {"issued_on": dt.datetime(2026, 1, 1)},
        {"expires_on": "2036-01-01"},
        {"card_number": "A0000001"},
        {"card_number": "A00000001\n"},
    ],
)
def test_identification_fields_are_validated(changes: dict[str, Any]) -> None:
    with pytest.raises(RecordError):
        identification(3, **changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"ssn": "1101051949123100x"},
        {"ssn": "11010519491231002XX"},
        {"name": ""},
        {"name": " 张三"},
        {"name": "张\u0000三"},
        {"name": "张" * 16},
        {"name": "\udcff"},
        {"name": b"\xd5\xc5"},
        {"sex": "3"},
        {"nation": ""},
        {"nation": "1"},
        {"birth_date": None},
    ],
)
def test_holder_fields_are_validated(changes: dict[str, Any]) -> None:
    with pytest.raises(RecordError):
        holder(**changes)


def test_name_limit_is_thirty_bytes_of_gb18030() -> None:
    assert len(holder(name="张" * 15).encode()) == 39 - 4 + 30
    assert HolderData.decode(holder(name="A" * 30).encode()).name == "A" * 30


def test_decoders_refuse_non_bytes() -> None:
    with pytest.raises(RecordError):
        CardIdentification.decode("0120")  # type: ignore[arg-type]
    with pytest.raises(RecordError):
        HolderData.decode(None)  # type: ignore[arg-type]


def test_generation() -> None:
    assert identification(2).generation == 2 and identification(3).generation == 3


# -- properties ---------------------------------------------------------------------------------------------

dates = st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31))
upper_hex = st.text("0123456789ABCDEF", min_size=16, max_size=16)
digits = st.text("0123456789", min_size=1, max_size=1)


@st.composite
def identifications(draw: st.DrawFn) -> CardIdentification:
    issued = draw(dates)
    expires = draw(st.dates(min_value=issued, max_value=date(9999, 12, 31)))
    return CardIdentification(
        identification_code=draw(st.text("0123456789", min_size=6, max_size=6)) + "D156000005" + draw(upper_hex),
        card_type="1",
        spec_version=draw(st.sampled_from(["2.00", "3.00"])),
        issuer_org=draw(st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=16)),
        issued_on=issued,
        expires_on=expires,
        card_number=draw(st.sampled_from("ABCXYZ")) + draw(st.text("0123456789", min_size=8, max_size=8)),
    )


def _is_name(text: str) -> bool:
    try:
        raw = text.encode("gb18030")
    except UnicodeEncodeError:
        return False
    return text.isprintable() and text == text.strip() and 0 < len(raw) <= 30


names = st.text(min_size=1, max_size=15).filter(_is_name)


@st.composite
def holders(draw: st.DrawFn) -> HolderData:
    return HolderData(
        ssn=draw(st.text("0123456789", min_size=17, max_size=17)) + draw(st.sampled_from("0123456789X")),
        name=draw(names),
        sex=draw(st.sampled_from("0129")),
        nation=draw(st.none() | st.text("0123456789", min_size=2, max_size=2)),
        birth_date=draw(dates),
    )


@given(identifications())
def test_ef05_round_trips(record: CardIdentification) -> None:
    assert CardIdentification.decode(record.encode()) == record


@given(holders())
def test_ef06_round_trips(record: HolderData) -> None:
    assert HolderData.decode(record.encode()) == record


@given(st.binary(max_size=200))
def test_arbitrary_bytes_into_ef05_raise_only_record_error(data: bytes) -> None:
    try:
        record = CardIdentification.decode(data)
    except RecordError:
        return
    assert record.encode() == data


@given(st.binary(max_size=200))
def test_arbitrary_bytes_into_ef06_raise_only_record_error(data: bytes) -> None:
    try:
        record = HolderData.decode(data)
    except RecordError:
        return
    assert record.encode() == data


def _mutate(raw: bytes, data: st.DataObject) -> bytes:
    out = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        out[data.draw(st.integers(0, len(out) - 1))] = data.draw(st.integers(0, 255))
    return bytes(out)


@given(st.data())
def test_mutated_records_are_refused_or_decode_canonically(data: st.DataObject) -> None:
    # Arbitrary bytes rarely get past the TLV layer; mutations of real records test the field checks.
    for decoder, raw in (
        (CardIdentification.decode, identification(3).encode()),
        (HolderData.decode, holder().encode()),
    ):
        mutated = _mutate(raw, data)
        try:
            record = decoder(mutated)
        except RecordError:
            continue
        assert record.encode() == mutated
