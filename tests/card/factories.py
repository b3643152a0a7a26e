"""Cards for the tests: fixed records, a throwaway issuer CA and card files of both generations.

The real issuer PKI lives in keys/; here a CA made on the spot is enough, the card does not check its chain.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from datetime import date
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from card.cardfile import CardFile
from card.cryptogram import diversify_key
from card.records import CardIdentification, HolderData

VECTORS = Path(__file__).with_name("vectors")
PIN = "123456"
MASTER_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
IDENT_CODE = "110100D1560000050123456789ABCDEF"


def identification(generation: int = 3, **changes: object) -> CardIdentification:
    fields: dict[str, object] = {
        "identification_code": IDENT_CODE,
        "card_type": "1",
        "spec_version": f"{generation}.00",
        "issuer_org": "110100",
        "issued_on": date(2026, 1, 1),
        "expires_on": date(2036, 1, 1),
        "card_number": "A00000001",
    }
    fields.update(changes)
    return CardIdentification(**fields)  # type: ignore[arg-type]


def holder(**changes: object) -> HolderData:
    fields: dict[str, object] = {
        "ssn": "11010519491231002X",
        "name": "张三",
        "sex": "1",
        "nation": "01",
        "birth_date": date(1949, 12, 31),
    }
    fields.update(changes)
    return HolderData(**fields)  # type: ignore[arg-type]


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sscard test issuer"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@functools.cache
def test_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Test Issuer CA"))
        .issuer_name(_name("Test Issuer CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def card_certificate(public_key: ec.EllipticCurvePublicKey, card_number: str = "A00000001") -> bytes:
    ca_key, ca_cert = test_ca()
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"card {card_number}"))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


def gen3_card(*, pin: str = PIN, protocol: str | None = None) -> CardFile:
    key = ec.generate_private_key(ec.SECP256R1())
    return CardFile.create(
        identification=identification(3),
        holder=holder(),
        pin=pin,
        protocol=protocol,
        gen3_private_key=key,
        gen3_certificate_der=card_certificate(key.public_key()),
    )


def gen2_card(algorithm: str = "3des", *, pin: str = PIN, protocol: str | None = None) -> CardFile:
    return CardFile.create(
        identification=identification(2),
        holder=holder(),
        pin=pin,
        protocol=protocol,
        gen2_algorithm=algorithm,
        gen2_key=diversify_key(MASTER_KEY, IDENT_CODE, algorithm),
    )


def vectors(name: str) -> Any:
    return json.loads((VECTORS / f"{name}.json").read_text(encoding="utf-8"))
