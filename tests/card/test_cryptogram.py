"""The shared INTERNAL AUTHENTICATE module against vectors computed with OpenSSL (see vectors/cryptogram.json)."""

from __future__ import annotations

from typing import Any

import pytest

from card import cryptogram
from tests.card.factories import vectors

V = vectors("cryptogram")


@pytest.mark.parametrize("algorithm", ["3des", "sm4"])
def test_key_diversification_matches_openssl(algorithm: str) -> None:
    key = cryptogram.diversify_key(bytes.fromhex(V["master_key"]), V["identification_code"], algorithm)
    assert key.hex().upper() == V["card_keys"][algorithm]


@pytest.mark.parametrize("vector", V["responses"], ids=lambda v: f"{v['algorithm']}-flags{v['flags']}")
def test_cmac_cryptogram_matches_openssl(vector: dict[str, Any]) -> None:
    message = cryptogram.auth_message(
        challenge=bytes.fromhex(V["challenge"]),
        context=bytes.fromhex(V["context"]),
        digest=cryptogram.files_digest(bytes.fromhex(V["ef05"]), bytes.fromhex(V["ef06"])),
        flags=vector["flags"],
    )
    key = bytes.fromhex(V["card_keys"][vector["algorithm"]])
    expected = bytes.fromhex(vector["response"])
    assert bytes([vector["flags"]]) + cryptogram.symmetric_cryptogram(key, vector["algorithm"], message) == expected
    assert cryptogram.verify_symmetric_cryptogram(key, vector["algorithm"], message, expected[1:])
    assert not cryptogram.verify_symmetric_cryptogram(key, vector["algorithm"], message + b"x", expected[1:])


def test_kiosk_context_is_the_sha256_of_the_prefixed_terminal_id() -> None:
    assert cryptogram.kiosk_context("kiosk-001").hex().upper() == V["context"]
