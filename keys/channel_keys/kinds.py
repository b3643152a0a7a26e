"""What a channel key is before it is stored: the channels, the kinds of key each uses and their roles, and reading
the consoles' formats (PEM, the bare base64 of Alipay's key tool and WeChat Pay's public key page, certificates).
No database here: keys/channel_keys/store.py stores and opens what these parse.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PURPOSE_PREFIX = "pay:"
MIN_RSA_BITS = 2048


class ChannelKeyError(Exception):
    """A refused import or state change; the message says why and never quotes key material."""


class Role(StrEnum):
    SIGN = "sign"
    VERIFY = "verify"
    DECRYPT = "decrypt"


class Kind(StrEnum):
    MERCHANT_KEY = "merchant-key"  # WeChat Pay merchant API private key (apiclient_key.pem) + its certificate serial
    PLATFORM_CERTIFICATE = "platform-certificate"  # WeChat Pay platform certificate (serial from the certificate)
    PLATFORM_PUBLIC_KEY = "platform-public-key"  # WeChat Pay platform public key, named PUB_KEY_ID_...
    APIV3_KEY = "apiv3-key"  # WeChat Pay APIv3 key: 32 characters set in the merchant console
    APP_KEY = "app-key"  # Alipay application private key
    ALIPAY_PUBLIC_KEY = "alipay-public-key"
    SIGNING_KEY = "signing-key"  # our key for the bank gateway (bank, card account, withholding)
    BANK_PUBLIC_KEY = "bank-public-key"  # the bank gateway's verification keys
    # The face-liveness vendor (authsvc/liveness/): not a payment channel, but its keys follow the same rules (our
    # request key signs, the vendor's callback keys verify, two valid at once during its rotation), so they live here
    # rather than in a second key store. Its purpose is `pay:liveness` only because that is the rows' prefix here.
    LIVENESS_API_KEY = "liveness-api-key"  # our key for the vendor's API
    LIVENESS_VENDOR_KEY = "liveness-vendor-key"  # the vendor's callback and response signing keys


@dataclass(frozen=True)
class KindSpec:
    channel: str
    role: Role
    kid_prefix: str
    key_type: str = "rsa"  # "rsa" (at least 2048 bits) or "ec" (P-256, the bank gateway's ECDSA)
    # What --serial must be when the channel names the key (WeChat Pay certificate serial, PUB_KEY_ID_..., the
    # bank's key id), and what it must look like.
    serial: str | None = None
    serial_pattern: re.Pattern[str] | None = None
    # Kinds whose active keys together make one verify set: retiring one active key is allowed while another is.
    group: str = ""


_WECHAT_SERIAL = re.compile(r"[0-9A-F]{8,40}")
_PUB_KEY_ID = re.compile(r"PUB_KEY_ID_[0-9]{1,48}")
_BANK_KEY_ID = re.compile(r"[A-Za-z0-9_\-]{1,60}")  # payments/channels/bank.py: Bank-Key-Id

SPECS: dict[Kind, KindSpec] = {
    Kind.MERCHANT_KEY: KindSpec(
        "wechatpay", Role.SIGN, "wxm", serial="the merchant API certificate serial (hex)", serial_pattern=_WECHAT_SERIAL
    ),
    Kind.PLATFORM_CERTIFICATE: KindSpec("wechatpay", Role.VERIFY, "wxc", group="platform"),
    Kind.PLATFORM_PUBLIC_KEY: KindSpec(
        "wechatpay", Role.VERIFY, "wxp", serial="PUB_KEY_ID_<digits>", serial_pattern=_PUB_KEY_ID, group="platform"
    ),
    Kind.APIV3_KEY: KindSpec("wechatpay", Role.DECRYPT, "wx3"),
    Kind.APP_KEY: KindSpec("alipay", Role.SIGN, "alk"),
    Kind.ALIPAY_PUBLIC_KEY: KindSpec("alipay", Role.VERIFY, "alp"),
    Kind.SIGNING_KEY: KindSpec(
        "bank", Role.SIGN, "bks", "ec", serial="the key id the bank knows our key by", serial_pattern=_BANK_KEY_ID
    ),
    Kind.BANK_PUBLIC_KEY: KindSpec(
        "bank", Role.VERIFY, "bkp", "ec", serial="the bank's key id (Bank-Key-Id)", serial_pattern=_BANK_KEY_ID
    ),
    Kind.LIVENESS_API_KEY: KindSpec(
        "liveness", Role.SIGN, "lva", "ec", serial="the key id the vendor knows our key by", serial_pattern=_BANK_KEY_ID
    ),
    Kind.LIVENESS_VENDOR_KEY: KindSpec(
        "liveness", Role.VERIFY, "lvv", "ec", serial="the vendor key id (Liveness-Key-Id)", serial_pattern=_BANK_KEY_ID
    ),
}
CHANNELS = ("wechatpay", "alipay", "bank", "liveness")


def purpose(channel: str) -> str:
    return PURPOSE_PREFIX + channel


def spec(channel: str, kind: str) -> tuple[Kind, KindSpec]:
    try:
        known = Kind(kind)
    except ValueError:
        raise ChannelKeyError(f"unknown kind {kind[:40]!r}; one of: {', '.join(Kind)}") from None
    found = SPECS[known]
    if found.channel != channel:
        kinds = ", ".join(k for k, s in SPECS.items() if s.channel == channel) or "none (unknown channel)"
        raise ChannelKeyError(f"{known} is not a {channel[:20]} key; {channel[:20]} kinds: {kinds}")
    return known, found


# --- reading what the consoles hand out ----------------------------------------------------------------------------


def _der_from_text(data: bytes) -> bytes | None:
    """The consoles' bare base64 (Alipay's key tool, WeChat Pay's public key page), whitespace allowed."""
    try:
        return base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def check_asymmetric(key: object, key_type: str) -> str:
    """The key's algorithm label if it is of `key_type`, else ChannelKeyError; public because store.py and the
    certificate refresh check the keys inside certificates the same way."""
    if key_type == "rsa":
        if not isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
            raise ChannelKeyError("this kind is an RSA key, and the file holds another type")
        if key.key_size < MIN_RSA_BITS:
            raise ChannelKeyError(f"RSA keys must have at least {MIN_RSA_BITS} bits (this one has {key.key_size})")
        return f"RSA-{key.key_size}"
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) or not isinstance(
        key.curve, ec.SECP256R1
    ):
        raise ChannelKeyError("this kind is an ECDSA P-256 key, and the file holds another type")
    return "EC-P256"


def load_private(data: bytes, key_type: str = "rsa") -> tuple[Any, str]:
    data = data.strip()
    try:
        if data.startswith(b"-----BEGIN"):
            if b"PRIVATE KEY" not in data.split(b"\n", 1)[0]:
                raise ChannelKeyError("this kind needs a private key, and the file holds something else")
            key = serialization.load_pem_private_key(data, password=None)
        else:
            der = _der_from_text(data)
            if der is None:
                raise ChannelKeyError("not a PEM private key nor the console's base64 text")
            key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError):
        raise ChannelKeyError("not a readable unencrypted private key (PEM, PKCS#8 or PKCS#1)") from None
    return key, check_asymmetric(key, key_type)


def load_public(data: bytes, key_type: str = "rsa") -> tuple[Any, str]:
    """A public key as PEM, the console's bare base64, or a certificate (its key is taken)."""
    data = data.strip()
    if b"PRIVATE KEY" in data[:64]:
        # Someone is about to hand us their own private key as the channel's: say so instead of storing it.
        raise ChannelKeyError("this kind is the channel's public key, and the file holds a private key")
    try:
        if data.startswith(b"-----BEGIN CERTIFICATE"):
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        elif data.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            der = _der_from_text(data)
            if der is None:
                raise ChannelKeyError("not a PEM public key nor the console's base64 text")
            try:
                key = serialization.load_der_public_key(der)
            except ValueError:
                key = x509.load_der_x509_certificate(der).public_key()
    except (ValueError, TypeError):
        raise ChannelKeyError("not a readable public key (PEM, base64 SubjectPublicKeyInfo or certificate)") from None
    return key, check_asymmetric(key, key_type)


def load_certificate(data: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data.strip())
    except ValueError:
        raise ChannelKeyError("not a PEM X.509 certificate") from None


def fingerprint(public_key: Any) -> str:
    """SHA-256 of the SubjectPublicKeyInfo: the same for a key, its certificate and the console's base64."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def secret_check_value(secret: bytes) -> str:
    """A key check value for a symmetric secret, as payment HSMs print one: 3 bytes, enough to tell two keys
    apart by eye, too few to confirm a guess against."""
    return "kcv:" + hmac.new(secret, b"sscard channel key check value", hashlib.sha256).hexdigest()[:6]
