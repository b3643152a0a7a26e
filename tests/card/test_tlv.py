from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from card.tlv import (
    BerTlv,
    TLVError,
    decode_records,
    encode_ber,
    encode_record,
    find_ber,
    parse_ber,
)

AID = bytes.fromhex("7378312E73682EC9E7BBE1B1A3D5CF")


# -- record TLV -----------------------------------------------------------------------------------------


def test_record_encoding_is_tag_length_value() -> None:
    assert encode_record(0x02, b"1") == bytes.fromhex("020131")
    assert encode_record(0x0D, b"") == bytes.fromhex("0D00")
    assert len(encode_record(0x09, b"x" * 0x7F)) == 0x81


@pytest.mark.parametrize(("tag", "value"), [(0x100, b""), (-1, b""), (0x01, b"x" * 0x80)])
def test_record_encoding_refuses_what_does_not_fit(tag: int, value: bytes) -> None:
    with pytest.raises(TLVError):
        encode_record(tag, value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("01", "truncated header"),
        ("010231", "2 bytes announced, 1 left"),
        ("018000", "above 0x7f"),
        ("0201310D", "offset 3: truncated"),
    ],
)
def test_malformed_records_say_what_is_wrong(raw: str, message: str) -> None:
    with pytest.raises(TLVError, match=message):
        decode_records(bytes.fromhex(raw))


def test_records_decode_in_file_order() -> None:
    assert decode_records(bytes.fromhex("0201310D00")) == [(0x02, b"1"), (0x0D, b"")]
    assert decode_records(b"") == []


records = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=0x7F)), max_size=8)


@given(records)
def test_records_round_trip(items: list[tuple[int, bytes]]) -> None:
    assert decode_records(b"".join(encode_record(t, v) for t, v in items)) == items


@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_records_or_tlv_error(data: bytes) -> None:
    try:
        items = decode_records(data)
    except TLVError:
        return
    assert b"".join(encode_record(t, v) for t, v in items) == data


# -- BER-TLV ----------------------------------------------------------------------------------------------


def test_the_fci_of_the_select_answer_parses() -> None:
    fci = bytes.fromhex("6F11840F") + AID
    (top,) = parse_ber(fci)
    assert top.tag == 0x6F and top.constructed
    name = top.find(0x84)
    assert name is not None and name.value == AID and not name.constructed
    assert encode_ber(0x6F, encode_ber(0x84, AID)) == fci


def test_multi_byte_tags_long_lengths_and_padding() -> None:
    data = bytes.fromhex("00FF9F3803010203") + bytes.fromhex("5F2D8102") + b"zh" + bytes.fromhex("C4820003") + b"abc"
    items = parse_ber(data)
    assert [(i.tag, i.value) for i in items] == [(0x9F38, b"\x01\x02\x03"), (0x5F2D, b"zh"), (0xC4, b"abc")]
    assert find_ber(items, 0x5F2D) == BerTlv(0x5F2D, b"zh")
    assert find_ber(items, 0x84) is None


@pytest.mark.parametrize("length", [0, 0x7F, 0x80, 0xFF, 0x100, 0x1234])
def test_ber_lengths_round_trip(length: int) -> None:
    value = bytes(length)
    assert parse_ber(encode_ber(0x53, value)) == [BerTlv(0x53, value)]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("9F", "truncated"),
        ("84", "length missing"),
        ("8480", "indefinite"),
        ("8482FF", "truncated length"),
        ("840301", "3 bytes announced, 1 left"),
        ("84840000000100", "4-byte length field"),
        ("9FFFFF0100", "longer than 3 bytes"),
        ("6F028401", "1 bytes announced, 0 left"),
    ],
)
def test_malformed_ber_says_what_is_wrong(raw: str, message: str) -> None:
    with pytest.raises(TLVError, match=message):
        parse_ber(bytes.fromhex(raw))


def test_nesting_is_bounded() -> None:
    data = b""
    for _ in range(20):
        data = encode_ber(0x6F, data)
    with pytest.raises(TLVError, match="nested too deeply"):
        parse_ber(data)


def test_a_primitive_object_has_no_children() -> None:
    with pytest.raises(TLVError, match="primitive"):
        BerTlv(0x84, b"").children()


def test_encode_ber_refuses_huge_values() -> None:
    with pytest.raises(TLVError):
        encode_ber(0x53, bytes(0x10000))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_ber_or_tlv_error(data: bytes) -> None:
    try:
        items = parse_ber(data)
    except TLVError:
        return
    for item in items:
        if item.constructed:
            item.children()  # validated up front, so this cannot fail now


simple_tags = st.integers(0, 0xFE).filter(lambda t: t & 0x1F != 0x1F and t not in (0x00, 0xFF) and not t & 0x20)


@given(st.lists(st.tuples(simple_tags, st.binary(max_size=400)), max_size=5))
def test_ber_round_trips(items: list[tuple[int, bytes]]) -> None:
    data = b"".join(encode_ber(t, v) for t, v in items)
    assert [(i.tag, i.value) for i in parse_ber(data)] == items
