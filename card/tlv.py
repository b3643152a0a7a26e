"""TLV codecs: the card's simple record TLV and the BER-TLV of the SELECT answer (FCI).

Both parsers read bytes that came from a card or, on the server, from a network client, so every
malformation is reported as `TLVError` with a message saying what is wrong and where; nothing here may
leak an IndexError or a struct error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

RECORD_MAX_LEN = 0x7F
# Longer tags and lengths than this never occur in a card's FCI; refusing them bounds the work.
_BER_MAX_TAG_BYTES = 3
_BER_MAX_LENGTH_BYTES = 3
_BER_MAX_DEPTH = 8


class TLVError(ValueError):
    """Malformed TLV data."""


# -- record TLV: tag (1 byte), length (1 byte, 00-7F), value ------------------------------------------


def encode_record(tag: int, value: bytes) -> bytes:
    if not 0 <= tag <= 0xFF:
        raise TLVError(f"record tag {tag} is not one byte")
    if len(value) > RECORD_MAX_LEN:
        raise TLVError(f"record {tag:02X}: {len(value)} bytes, at most {RECORD_MAX_LEN} fit")
    return bytes([tag, len(value)]) + bytes(value)


def decode_records(data: bytes) -> list[tuple[int, bytes]]:
    """Split a file's content into (tag, value) records, in the order they appear."""
    data = bytes(data)
    records: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise TLVError(f"record at offset {pos}: truncated header")
        tag, length = data[pos], data[pos + 1]
        if length > RECORD_MAX_LEN:
            raise TLVError(f"record {tag:02X} at offset {pos}: length {length:#04x} above {RECORD_MAX_LEN:#04x}")
        end = pos + 2 + length
        if end > len(data):
            raise TLVError(f"record {tag:02X} at offset {pos}: {length} bytes announced, {len(data) - pos - 2} left")
        records.append((tag, data[pos + 2 : end]))
        pos = end
    return records


# -- BER-TLV (ISO/IEC 7816-4 FCI) ------------------------------------------------------------------------


@dataclass(frozen=True)
class BerTlv:
    tag: int
    value: bytes

    @property
    def constructed(self) -> bool:
        first = self.tag
        while first > 0xFF:
            first >>= 8
        return bool(first & 0x20)

    def children(self) -> list[BerTlv]:
        if not self.constructed:
            raise TLVError(f"tag {self.tag:X} is primitive, it has no children")
        return parse_ber(self.value)

    def find(self, tag: int) -> BerTlv | None:
        return find_ber(self.children(), tag)


def _tag_bytes(tag: int) -> bytes:
    if tag < 0:
        raise TLVError("negative tag")
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")


def encode_ber(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    elif n <= 0xFF:
        length = bytes([0x81, n])
    elif n <= 0xFFFF:
        length = bytes([0x82]) + n.to_bytes(2, "big")
    else:
        raise TLVError(f"BER value of {n} bytes is too long for a card")
    return _tag_bytes(tag) + length + bytes(value)


def _iter_ber(data: bytes, depth: int) -> Iterator[BerTlv]:
    if depth > _BER_MAX_DEPTH:
        raise TLVError("BER-TLV nested too deeply")
    pos = 0
    while pos < len(data):
        start = pos
        # 00 and FF between objects are padding in ISO 7816-4; they carry nothing.
        if data[pos] in (0x00, 0xFF):
            pos += 1
            continue
        tag = data[pos]
        pos += 1
        if tag & 0x1F == 0x1F:
            for _ in range(_BER_MAX_TAG_BYTES - 1):
                if pos >= len(data):
                    raise TLVError(f"BER tag at offset {start}: truncated")
                tag = (tag << 8) | data[pos]
                pos += 1
                if not data[pos - 1] & 0x80:
                    break
            else:
                raise TLVError(f"BER tag at offset {start}: longer than {_BER_MAX_TAG_BYTES} bytes")
        if pos >= len(data):
            raise TLVError(f"BER tag {tag:X} at offset {start}: length missing")
        first = data[pos]
        pos += 1
        if first < 0x80:
            length = first
        elif first == 0x80:
            raise TLVError(f"BER tag {tag:X} at offset {start}: indefinite length is not allowed")
        else:
            count = first & 0x7F
            if count > _BER_MAX_LENGTH_BYTES:
                raise TLVError(f"BER tag {tag:X} at offset {start}: {count}-byte length field")
            if pos + count > len(data):
                raise TLVError(f"BER tag {tag:X} at offset {start}: truncated length")
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        if pos + length > len(data):
            raise TLVError(f"BER tag {tag:X} at offset {start}: {length} bytes announced, {len(data) - pos} left")
        item = BerTlv(tag, data[pos : pos + length])
        pos += length
        if item.constructed:
            # Validate the whole tree up front so that a later children() cannot fail half-way.
            for _ in _iter_ber(item.value, depth + 1):
                pass
        yield item


def parse_ber(data: bytes) -> list[BerTlv]:
    """Parse a sequence of BER-TLV objects; constructed values are checked recursively."""
    return list(_iter_ber(bytes(data), 0))


def find_ber(items: list[BerTlv], tag: int) -> BerTlv | None:
    return next((item for item in items if item.tag == tag), None)
