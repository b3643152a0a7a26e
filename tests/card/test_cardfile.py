from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from card.cardfile import FORMAT, CardFile, CardFileError
from tests.card.factories import MASTER_KEY, PIN, card_certificate, gen2_card, gen3_card, holder, identification


@pytest.fixture(scope="module")
def card3() -> CardFile:
    return gen3_card()


@pytest.fixture(scope="module")
def card2() -> CardFile:
    return gen2_card("sm4")


def test_create_defaults(card3: CardFile, card2: CardFile) -> None:
    assert card3.protocol == "T=1" and card3.generation == 3 and card3.gen2 is None
    assert card2.protocol == "T=0" and card2.generation == 2 and card2.gen3 is None
    assert card3.tries_left == card3.max_tries == 3
    assert gen3_card(protocol="T=0").protocol == "T=0"


def test_check_pin(card3: CardFile) -> None:
    assert card3.check_pin(PIN)
    assert not card3.check_pin("123457")
    assert not card3.check_pin("12345")  # a prefix is not the PIN
    assert not card3.check_pin("12a456") and not card3.check_pin("")
    assert not card3.check_pin(123456)  # type: ignore[arg-type]


def test_the_file_holds_a_verifier_not_the_pin(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    card = gen2_card(pin="907315")
    card.save(path)
    assert "907315" not in path.read_text() and len(card.pin_salt) == 16


@pytest.mark.parametrize("which", ["card3", "card2"])
def test_save_load_round_trip(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    card: CardFile = request.getfixturevalue(which)
    path = tmp_path / "card.json"
    card.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = CardFile.load(path)
    assert loaded.to_json() == card.to_json()
    assert loaded.check_pin(PIN)
    doc = json.loads(path.read_text())
    assert doc["format"] == FORMAT and ("gen3" in doc) != ("gen2" in doc)
    assert doc["identification"]["issued_on"] == "2026-01-01" and doc["holder"]["name"] == "张三"


def test_save_replaces_atomically_and_leaves_no_temporary_files(card2: CardFile, tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    card2.save(path)
    card2.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_save_failure_leaves_the_old_file(card2: CardFile, tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "card.json"
    with pytest.raises(OSError):
        card2.save(path)
    assert not path.exists()


def _doc(card: CardFile) -> dict[str, Any]:
    return json.loads(json.dumps(card.to_json()))


def _broken(card: CardFile, edit: str) -> Any:
    doc = _doc(card)
    if edit == "not an object":
        return [doc]
    if edit == "wrong format":
        doc["format"] = "sscard-softcard/2"
    elif edit == "no holder":
        del doc["holder"]
    elif edit == "bad date":
        doc["identification"]["issued_on"] = "20260101"
    elif edit == "impossible date":
        doc["holder"]["birth_date"] = "1990-02-30"
    elif edit == "bad ssn":
        doc["holder"]["ssn"] = "123"
    elif edit == "nation not a string":
        doc["holder"]["nation"] = 1
    elif edit == "tries as string":
        doc["pin"]["tries_left"] = "3"
    elif edit == "tries above max":
        doc["pin"]["tries_left"] = 4
    elif edit == "tries as bool":
        doc["pin"]["tries_left"] = True
    elif edit == "salt not base64":
        doc["pin"]["scrypt_salt"] = "***"
    elif edit == "hash too short":
        doc["pin"]["scrypt_hash"] = "AAAA"
    elif edit == "protocol T=2":
        doc["protocol"] = "T=2"
    elif edit == "both generations":
        doc["gen2"] = {"algorithm": "3des", "key": MASTER_KEY.hex()}
    elif edit == "no generation":
        del doc["gen3"]
    elif edit == "bad pem":
        doc["gen3"]["private_key_pem"] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    elif edit == "certificate of another key":
        other = ec.generate_private_key(ec.SECP256R1())
        import base64

        doc["gen3"]["certificate_der"] = base64.b64encode(card_certificate(other.public_key())).decode()
    elif edit == "certificate garbage":
        doc["gen3"]["certificate_der"] = "AAAA"
    elif edit == "spec version 2.00 with a gen3 key":
        doc["identification"]["spec_version"] = "2.00"
    else:
        raise AssertionError(edit)
    return doc


@pytest.mark.parametrize(
    "edit",
    [
        "not an object",
        "wrong format",
        "no holder",
        "bad date",
        "impossible date",
        "bad ssn",
        "nation not a string",
        "tries as string",
        "tries above max",
        "tries as bool",
        "salt not base64",
        "hash too short",
        "protocol T=2",
        "both generations",
        "no generation",
        "bad pem",
        "certificate of another key",
        "certificate garbage",
        "spec version 2.00 with a gen3 key",
    ],
)
def test_load_refuses_malformed_files_clearly(card3: CardFile, tmp_path: Path, edit: str) -> None:
    path = tmp_path / "card.json"
    path.write_text(json.dumps(_broken(card3, edit)))
    with pytest.raises(CardFileError, match=str(path)):
        CardFile.load(path)


def test_gen2_key_must_be_hex_and_16_bytes(card2: CardFile, tmp_path: Path) -> None:
    for key in ("zz", "00" * 15):
        doc = _doc(card2)
        doc["gen2"]["key"] = key
        with pytest.raises(CardFileError, match=r"hexadecimal|16 bytes"):
            CardFile.from_json(doc)


@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe", b"null"])
def test_load_refuses_non_json(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "card.json"
    path.write_bytes(content)
    with pytest.raises(CardFileError):
        CardFile.load(path)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CardFileError, match="cannot read"):
        CardFile.load(tmp_path / "nope.json")


def test_create_validates_its_arguments() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = card_certificate(key.public_key())
    ok3 = {"identification": identification(3), "holder": holder(), "pin": PIN}
    with pytest.raises(CardFileError, match="PIN"):
        CardFile.create(**{**ok3, "pin": "123"}, gen3_private_key=key, gen3_certificate_der=der)
    with pytest.raises(CardFileError, match="either"):
        CardFile.create(**ok3)
    with pytest.raises(CardFileError, match="either"):
        CardFile.create(**ok3, gen3_private_key=key, gen3_certificate_der=der, gen2_algorithm="sm4", gen2_key=bytes(16))
    with pytest.raises(CardFileError, match="P-256"):
        CardFile.create(**ok3, gen3_private_key=ec.generate_private_key(ec.SECP384R1()), gen3_certificate_der=der)
    with pytest.raises(CardFileError, match="not for the card's private key"):
        CardFile.create(**ok3, gen3_private_key=ec.generate_private_key(ec.SECP256R1()), gen3_certificate_der=der)
    with pytest.raises(CardFileError, match="2nd-generation"):
        CardFile.create(**ok3, gen2_algorithm="sm4", gen2_key=bytes(16))
    ok2 = {**ok3, "identification": identification(2)}
    with pytest.raises(CardFileError, match="algorithm"):
        CardFile.create(**ok2, gen2_algorithm="aes", gen2_key=bytes(16))
    with pytest.raises(CardFileError, match="16 bytes"):
        CardFile.create(**ok2, gen2_algorithm="3des", gen2_key=bytes(24))
    with pytest.raises(CardFileError, match="protocol"):
        CardFile.create(**ok2, gen2_algorithm="3des", gen2_key=bytes(16), protocol="T=CL")
