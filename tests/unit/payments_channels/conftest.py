"""Keys for the channel wire format tests: generated once per session, never read from keys/."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def platform_cert_key() -> rsa.RSAPrivateKey:
    """The key behind a WeChat Pay platform certificate (the older verification mode)."""
    return _rsa()


@pytest.fixture(scope="session")
def platform_pub_key() -> rsa.RSAPrivateKey:
    """The key behind a WeChat Pay platform public key (PUB_KEY_ID_...), the newer mode."""
    return _rsa()


@pytest.fixture(scope="session")
def other_key() -> rsa.RSAPrivateKey:
    return _rsa()


@pytest.fixture(scope="session")
def merchant_key() -> rsa.RSAPrivateKey:
    """Our merchant API key (WeChat Pay) or application private key (Alipay)."""
    return _rsa()


@pytest.fixture(scope="session")
def alipay_key() -> rsa.RSAPrivateKey:
    """Alipay's own key pair; we only ever hold the public half."""
    return _rsa()


@pytest.fixture(scope="session")
def platform_cert_pem(platform_cert_key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA test")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(platform_cert_key.public_key())
        .serial_number(0x5157F09EFDC096DE15EBE81A47057A7232F1B8E1)  # the serial used in WeChat Pay's examples
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1825))
        .sign(platform_cert_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
