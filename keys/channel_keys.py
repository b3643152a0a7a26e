"""Payment channel keys and secrets, sealed in `key_material` like every other key, rotatable (docs/keys.md).

One row per key: purpose `pay:<channel>` (wechatpay, alipay, bank; the card account and withholding go through the
bank's gateway and use its keys), label = the kind of key. States follow keys/signing.py, with one rule per role:

* sign (our private keys: WeChat Pay merchant API key, Alipay app key, our bank signing key): exactly one `active`
  key signs; a `next` key waits until the channel knows it, then `promote` makes it active and retires the old one.
* verify (the channel's keys: WeChat Pay platform certificates and platform public keys, the Alipay public key, the
  bank's keys): every `active` and `next` key verifies, so a rotation at the channel has two valid at once; a
  retired key verifies nothing.
* decrypt (the WeChat Pay APIv3 key, which the merchant may change in the console at any time): `active` and `next`
  both decrypt, and after `promote` the old key keeps decrypting for APIV3_SWITCH_WINDOW (WeChat Pay retries a
  notification for about 24 hours, and one encrypted before the switch may still arrive). `retire` ends that at once.

Secrets are opened only inside this module's loaders; listings carry kids, kinds, states and fingerprints.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from authsvc.database import lock, unit_of_work, utcnow
from keys.models import KeyRecord, KeyState
from keys.pem import private_pem, public_pem
from keys.sealing import Sealer

PURPOSE_PREFIX = "pay:"
# WeChat Pay retries a notification 15 times over about 24 h 4 min; a day and an hour covers the last retry of one
# encrypted under the old key just before the switch.
APIV3_SWITCH_WINDOW = timedelta(hours=25)
MIN_RSA_BITS = 2048
_MAX_INPUT = 64 * 1024


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
}
CHANNELS = ("wechatpay", "alipay", "bank")


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


def _check_asymmetric(key: object, key_type: str) -> str:
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
    return key, _check_asymmetric(key, key_type)


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
    return key, _check_asymmetric(key, key_type)


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


# --- importing -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    """What `list` shows of a key: never the secret."""

    kid: str
    channel: str
    kind: str
    state: str
    algorithm: str
    fingerprint: str
    serial: str | None
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None
    usable_until: datetime | None  # a certificate's notAfter, or a retired APIv3 key's end of the switch window

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out


def _records(session: Session, channel: str, kind: str | None = None, *, for_update: bool = False) -> list[KeyRecord]:
    query = select(KeyRecord).where(KeyRecord.purpose == purpose(channel)).order_by(KeyRecord.created_at)
    if kind is not None:
        query = query.where(KeyRecord.label == kind)
    if for_update:
        query = query.with_for_update()
    return list(session.scalars(query))


def serial_of(record: KeyRecord) -> str | None:
    """The channel's name for the key (certificate serial, PUB_KEY_ID_..., bank key id), kept in the kid after the
    kind's prefix."""
    kind = Kind(record.label)
    if SPECS[kind].serial is not None or kind is Kind.PLATFORM_CERTIFICATE:
        return record.kid.split("-", 1)[1]
    return None


def _normalise_serial(kind: Kind, serial: str | None) -> str:
    kspec = SPECS[kind]
    assert kspec.serial_pattern is not None
    if serial is None:
        raise ChannelKeyError(f"{kind} needs --serial ({kspec.serial})")
    value = serial.strip()
    if kind is Kind.MERCHANT_KEY:
        value = value.upper()
    if not kspec.serial_pattern.fullmatch(value):
        raise ChannelKeyError(f"--serial must be {kspec.serial}")
    return value


def _stored_fingerprint(record: KeyRecord) -> str:
    assert record.public_pem is not None
    return fingerprint(serialization.load_pem_public_key(record.public_pem.encode()))


def _guard(session: Session, channel: str) -> None:
    # Imports, promotions and the certificate refresh of one channel run one at a time across workers.
    lock(session, f"keys:{purpose(channel)}")


def import_key(
    session: Session,
    sealer: Sealer,
    *,
    channel: str,
    kind: str,
    data: bytes,
    serial: str | None = None,
    now: datetime | None = None,
) -> KeyRecord:
    """Store one key from what the channel's console gave: active if its kind has none yet, `next` otherwise."""
    known, kspec = spec(channel, kind)
    if len(data) > _MAX_INPUT:
        raise ChannelKeyError("the file is too large to be a key")
    now = now or utcnow()
    public: str | None = None
    certificate: str | None = None
    serial_from_cert: str | None = None
    if kspec.role is Role.SIGN:
        private, algorithm = load_private(data, kspec.key_type)
        public = public_pem(private.public_key())
        sealed = sealer.seal(private_pem(private))
        mark = fingerprint(private.public_key())
    elif known is Kind.APIV3_KEY:
        secret = data.strip()
        if len(secret) != 32 or not secret.isascii() or not secret.isalnum():
            raise ChannelKeyError("the APIv3 key is the 32 letters and digits set in the merchant console")
        algorithm, sealed, mark = "AES-256-GCM", sealer.seal(secret), ""
    elif known is Kind.PLATFORM_CERTIFICATE:
        cert = load_certificate(data)
        algorithm = _check_asymmetric(cert.public_key(), "rsa")
        if cert.not_valid_after_utc <= now:
            raise ChannelKeyError("the certificate has expired")
        certificate = cert.public_bytes(serialization.Encoding.PEM).decode()
        public = public_pem(cert.public_key())
        serial_from_cert = format(cert.serial_number, "X")
        sealed, mark = sealer.seal(b""), fingerprint(cert.public_key())
    else:
        key, algorithm = load_public(data, kspec.key_type)
        public = public_pem(key)
        sealed, mark = sealer.seal(b""), fingerprint(key)
    if kspec.serial is not None:
        serial = _normalise_serial(known, serial)
    elif known is Kind.PLATFORM_CERTIFICATE:
        if serial is not None and serial.strip().upper() != serial_from_cert:
            raise ChannelKeyError("--serial differs from the certificate's own serial number (leave it out)")
        serial = serial_from_cert
    elif serial is not None:
        raise ChannelKeyError(f"{known} takes no --serial (its channel does not name it)")

    _guard(session, channel)
    existing = _records(session, channel, known, for_update=True)
    for record in existing:
        if serial is not None and serial_of(record) == serial:
            raise ChannelKeyError(f"{known} {serial} is already stored as {record.kid} ({record.state})")
        if mark and record.public_pem and _stored_fingerprint(record) == mark:
            raise ChannelKeyError(f"this {known} is already stored as {record.kid} ({record.state})")
        if known is Kind.APIV3_KEY and hmac.compare_digest(sealer.open(record.sealed_secret), data.strip()):
            raise ChannelKeyError(f"this APIv3 key is already stored as {record.kid} ({record.state})")
    kid = f"{kspec.kid_prefix}-{serial or f'{now:%Y%m%d}-{secrets.token_hex(4)}'}"
    if len(kid) > 64:
        raise ChannelKeyError("the serial is too long")
    if session.get(KeyRecord, kid) is not None:
        raise ChannelKeyError(f"a key {kid} is already stored")
    has_active = any(r.state == KeyState.ACTIVE for r in existing)
    record = KeyRecord(
        kid=kid,
        purpose=purpose(channel),
        algorithm=algorithm,
        state=KeyState.NEXT if has_active else KeyState.ACTIVE,
        label=known.value,
        public_pem=public,
        certificate_pem=certificate,
        sealed_secret=sealed,
        created_at=now,
        activated_at=None if has_active else now,
    )
    session.add(record)
    session.flush()
    return record


# --- listing and state changes ---------------------------------------------------------------------------------------


def describe(record: KeyRecord, sealer: Sealer) -> Listed:
    kind = Kind(record.label)
    usable_until = record.publish_until if record.state == KeyState.RETIRED and kind is Kind.APIV3_KEY else None
    if record.certificate_pem:
        usable_until = x509.load_pem_x509_certificate(record.certificate_pem.encode()).not_valid_after_utc
    mark = _stored_fingerprint(record) if record.public_pem else secret_check_value(sealer.open(record.sealed_secret))
    return Listed(
        kid=record.kid,
        channel=record.purpose.removeprefix(PURPOSE_PREFIX),
        kind=kind.value,
        state=record.state,
        algorithm=record.algorithm,
        fingerprint=mark,
        serial=serial_of(record),
        created_at=record.created_at,
        activated_at=record.activated_at,
        retired_at=record.retired_at,
        usable_until=usable_until,
    )


def list_keys(session: Session, sealer: Sealer, channel: str | None = None) -> list[Listed]:
    if channel is not None and channel not in CHANNELS:
        raise ChannelKeyError(f"unknown channel {channel[:20]!r}; one of: {', '.join(CHANNELS)}")
    return [describe(r, sealer) for c in ([channel] if channel else CHANNELS) for r in _records(session, c)]


def _owned(session: Session, kid: str) -> KeyRecord:
    record = session.get(KeyRecord, kid)
    if record is None or not record.purpose.startswith(PURPOSE_PREFIX):
        raise ChannelKeyError(f"no channel key {kid[:64]!r}")
    return record


def _retire(record: KeyRecord, now: datetime, *, grace: timedelta = timedelta(0)) -> None:
    record.state = KeyState.RETIRED
    record.retired_at = now
    record.publish_until = now + grace


def promote(session: Session, kid: str, *, now: datetime | None = None) -> tuple[KeyRecord, KeyRecord | None]:
    """A `next` key becomes the active one of its kind; the previous active key is retired (an APIv3 key keeps
    decrypting for the switch window). Returns (promoted, retired)."""
    now = now or utcnow()
    record = _owned(session, kid)
    channel = record.purpose.removeprefix(PURPOSE_PREFIX)
    _guard(session, channel)
    session.refresh(record, with_for_update=True)
    if record.state != KeyState.NEXT:
        raise ChannelKeyError(f"{kid} is {record.state}: only a next key can be promoted")
    kind = Kind(record.label)
    old = next((r for r in _records(session, channel, kind, for_update=True) if r.state == KeyState.ACTIVE), None)
    if old is not None:
        _retire(old, now, grace=APIV3_SWITCH_WINDOW if kind is Kind.APIV3_KEY else timedelta(0))
    record.state = KeyState.ACTIVE
    record.activated_at = now
    session.flush()
    return record, old


def retire(session: Session, kid: str, *, now: datetime | None = None) -> KeyRecord:
    """Stop using a key at once (a retired APIv3 key decrypts nothing more). The last active key of a kind (of the
    platform keys: of certificates and public keys together) cannot be retired: promote its successor instead."""
    now = now or utcnow()
    record = _owned(session, kid)
    channel = record.purpose.removeprefix(PURPOSE_PREFIX)
    _guard(session, channel)
    session.refresh(record, with_for_update=True)
    if record.state == KeyState.RETIRED:
        if record.publish_until is not None and record.publish_until > now:
            _retire(record, now)  # end an APIv3 switch window early
            session.flush()
            return record
        raise ChannelKeyError(f"{kid} is already retired")
    if record.state == KeyState.ACTIVE:
        kspec = SPECS[Kind(record.label)]
        kinds = [k for k, s in SPECS.items() if s.channel == channel and s.group and s.group == kspec.group]
        others = [
            r
            for k in kinds or [Kind(record.label)]
            for r in _records(session, channel, k, for_update=True)
            if r.state == KeyState.ACTIVE and r.kid != kid
        ]
        if not others:
            raise ChannelKeyError(
                f"{kid} is the only active {record.label} of {channel}: import and promote its successor first"
            )
    _retire(record, now)
    session.flush()
    return record


# --- what adapters use ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    kid: str
    serial: str | None  # the channel's name for it (WeChat Pay: the merchant certificate serial)
    private_key: Any = field(repr=False)


@dataclass(frozen=True)
class ChannelMaterial:
    """One channel's opened keys at one moment. Verify keys are by the channel's name where it has one."""

    channel: str
    signer: Signer | None = None
    verify_keys: Mapping[str, Any] = field(default_factory=dict)  # serial or kid -> public key, active first
    secrets: Sequence[bytes] = field(default=(), repr=False)  # decryption keys, active first

    def missing(self, required: Sequence[str]) -> list[str]:
        have = {"signer": self.signer is not None, "verify": bool(self.verify_keys), "secret": bool(self.secrets)}
        return [name for name in required if not have[name]]


_ORDER = {KeyState.ACTIVE: 0, KeyState.NEXT: 1, KeyState.RETIRED: 2}


def material(session: Session, sealer: Sealer, channel: str, *, now: datetime | None = None) -> ChannelMaterial:
    now = now or utcnow()
    records = sorted(_records(session, channel), key=lambda r: (_ORDER.get(r.state, 3), r.created_at))
    signer: Signer | None = None
    verify: dict[str, Any] = {}
    keys: list[bytes] = []
    for record in records:
        kind = Kind(record.label)
        role = SPECS[kind].role
        if role is Role.SIGN and record.state == KeyState.ACTIVE and signer is None:
            key = serialization.load_pem_private_key(sealer.open(record.sealed_secret), password=None)
            signer = Signer(record.kid, serial_of(record), key)
        elif role is Role.VERIFY and record.state in (KeyState.ACTIVE, KeyState.NEXT):
            if record.certificate_pem:
                cert = x509.load_pem_x509_certificate(record.certificate_pem.encode())
                if cert.not_valid_after_utc <= now:
                    continue  # the channel signs nothing more with an expired certificate
            assert record.public_pem is not None
            verify[serial_of(record) or record.kid] = serialization.load_pem_public_key(record.public_pem.encode())
        elif role is Role.DECRYPT and (
            record.state in (KeyState.ACTIVE, KeyState.NEXT)
            or (record.publish_until is not None and record.publish_until > now)
        ):
            keys.append(sealer.open(record.sealed_secret))
    return ChannelMaterial(channel, signer, verify, tuple(keys))


class ChannelKeyring:
    """Each worker's opened channel keys, re-read every `cache_seconds` so that a promotion, a retirement or a
    refreshed platform certificate reaches every worker without a restart."""

    def __init__(self, sessions: sessionmaker[Session], sealer: Sealer, *, cache_seconds: int) -> None:
        self._sessions = sessions
        self._sealer = sealer
        self._cache_seconds = cache_seconds
        self._loaded: dict[str, tuple[float, ChannelMaterial]] = {}
        self._guard = threading.Lock()

    def get(self, channel: str) -> ChannelMaterial:
        found = self._loaded.get(channel)
        if found is None or time.monotonic() - found[0] >= self._cache_seconds:
            with self._guard:
                found = self._loaded.get(channel)
                if found is None or time.monotonic() - found[0] >= self._cache_seconds:
                    with unit_of_work(self._sessions) as session:
                        found = (time.monotonic(), material(session, self._sealer, channel))
                    self._loaded[channel] = found
        return found[1]

    def __repr__(self) -> str:
        return f"ChannelKeyring(channels={sorted(self._loaded)})"


# --- WeChat Pay platform certificate refresh ------------------------------------------------------------------------


class RefreshError(Exception):
    """The certificate list could not be fetched or trusted: nothing was stored."""


@dataclass(frozen=True)
class RefreshReport:
    listed: list[str]
    added: list[str]
    promoted: list[str]
    retired: list[str]

    def as_dict(self) -> dict[str, list[str]]:
        return dict(self.__dict__)


def read_certificate_list(
    headers: Mapping[str, str], body: bytes, *, apiv3_keys: Sequence[bytes], known: Mapping[str, Any], now: float
) -> dict[str, x509.Certificate]:
    """The certificates of a `GET /v3/certificates` answer, by serial, once both checks hold: each certificate
    decrypts under one of our APIv3 keys (AEAD: only WeChat Pay and we hold it, which is what makes a first
    download trustworthy), and the answer's signature verifies under a platform key we hold or one it carries."""
    from payments.channels import wechatpay as wx
    from payments.channels.common import ChannelRefusal

    try:
        document = json.loads(body.decode("utf-8"))
        entries = document["data"]
        if not isinstance(entries, list) or not entries:
            raise RefreshError("the certificate list is empty")
        certificates: dict[str, x509.Certificate] = {}
        for entry in entries:
            enc = entry["encrypt_certificate"]
            resource = wx.EncryptedResource(
                algorithm=str(enc["algorithm"]),
                ciphertext=str(enc["ciphertext"]),
                nonce=str(enc["nonce"]),
                associated_data=str(enc.get("associated_data", "")),
                original_type="certificate",
            )
            pem = _decrypt_any(resource, apiv3_keys)
            cert = x509.load_pem_x509_certificate(pem)
            serial = format(cert.serial_number, "X")
            if serial != str(entry["serial_no"]).upper():
                raise RefreshError("a certificate's serial_no does not match the certificate it carries")
            _check_asymmetric(cert.public_key(), "rsa")
            certificates[serial] = cert
    except (ValueError, KeyError, TypeError, AttributeError, ChannelKeyError) as exc:
        raise RefreshError(f"the certificate list is not WeChat Pay's format ({type(exc).__name__})") from None
    keys = dict(known)
    for serial, cert in certificates.items():
        keys.setdefault(serial, cert.public_key())
    try:
        wx.verify_callback(headers, body, wx.PlatformKeys(keys), now=now)
    except ChannelRefusal as refusal:
        raise RefreshError(f"the certificate list's signature does not hold: {refusal.message}") from None
    return certificates


def _decrypt_any(resource: Any, apiv3_keys: Sequence[bytes]) -> bytes:
    from payments.channels import wechatpay as wx
    from payments.channels.common import ChannelRefusal

    if not apiv3_keys:
        raise RefreshError("no APIv3 key is stored: import one with `authsvc channel-keys import --kind apiv3-key`")
    for key in apiv3_keys:
        try:
            return wx.decrypt_resource(resource, key)
        except ChannelRefusal as refusal:
            if refusal.reason != "decryption":
                raise RefreshError(f"a certificate is not decryptable: {refusal.message}") from None
    raise RefreshError("a certificate does not decrypt under any stored APIv3 key")


def apply_certificate_list(
    session: Session, sealer: Sealer, certificates: Mapping[str, x509.Certificate], *, now: datetime | None = None
) -> RefreshReport:
    """Store the listed certificates we lack (`next` beside an active one, so both verify at once), retire expired
    ones, and when the active certificate has expired or WeChat Pay no longer lists it, promote the newest listed
    one: a rotation at WeChat Pay needs no operator."""
    now = now or utcnow()
    _guard(session, "wechatpay")
    stored = {serial_of(r): r for r in _records(session, "wechatpay", Kind.PLATFORM_CERTIFICATE, for_update=True)}
    added, promoted, retired = [], [], []
    for serial, cert in sorted(certificates.items(), key=lambda item: item[1].not_valid_before_utc):
        if serial in stored or cert.not_valid_after_utc <= now:
            continue
        record = import_key(
            session,
            sealer,
            channel="wechatpay",
            kind=Kind.PLATFORM_CERTIFICATE,
            data=cert.public_bytes(serialization.Encoding.PEM),
            now=now,
        )
        stored[serial] = record
        added.append(record.kid)

    def expiry(record: KeyRecord) -> datetime:
        assert record.certificate_pem is not None
        return x509.load_pem_x509_certificate(record.certificate_pem.encode()).not_valid_after_utc

    for record in stored.values():
        if record.state != KeyState.RETIRED and expiry(record) <= now:
            _retire(record, now)
            retired.append(record.kid)
    active = next((r for r in stored.values() if r.state == KeyState.ACTIVE), None)
    if active is None or serial_of(active) not in certificates:
        candidates = [
            r
            for s, r in stored.items()
            if r.state == KeyState.NEXT and s in certificates and certificates[s].not_valid_before_utc <= now
        ]
        if candidates:
            newest = max(candidates, key=lambda r: certificates[serial_of(r) or ""].not_valid_before_utc)
            if active is not None:
                _retire(active, now)
                retired.append(active.kid)
            newest.state = KeyState.ACTIVE
            newest.activated_at = now
            promoted.append(newest.kid)
    session.flush()
    return RefreshReport(sorted(certificates), added, promoted, retired)


def fetch_certificate_list(
    http: Any, *, base_url: str, mchid: str, signer: Signer, now: float | None = None
) -> tuple[dict[str, str], bytes]:
    """`GET /v3/certificates`, signed with the merchant API key; (headers, body) of a 200, else RefreshError."""
    from payments.channels import wechatpay as wx

    if signer.serial is None:
        raise RefreshError("the merchant key has no certificate serial")
    path = "/v3/certificates"
    authorization = wx.authorization_header(
        method="GET",
        url=path,
        body="",
        mchid=mchid,
        serial_no=signer.serial,
        private_key=signer.private_key,
        timestamp=None if now is None else int(now),
    )
    try:
        response = http.get(
            base_url.rstrip("/") + path,
            headers={"Authorization": authorization, "Accept": "application/json", "User-Agent": "sscard"},
        )
    except Exception as exc:  # httpx.HTTPError and friends: the outcome is "could not fetch", whatever the cause
        raise RefreshError(f"WeChat Pay did not answer ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise RefreshError(f"WeChat Pay answered HTTP {response.status_code}")
    return dict(response.headers), response.content


def refresh_wechatpay_certificates(
    sessions: sessionmaker[Session],
    sealer: Sealer,
    http: Any,
    *,
    base_url: str,
    mchid: str,
    clock: Callable[[], float] = time.time,
) -> RefreshReport:
    """Fetch, check and store WeChat Pay's platform certificates (`authsvc channel-keys
    refresh-wechatpay-certificates`, scheduled e.g. every 12 hours). The network call runs outside any transaction."""
    with unit_of_work(sessions) as session:
        current = material(session, sealer, "wechatpay")
    if current.signer is None:
        raise RefreshError("no active WeChat Pay merchant key: import one with --kind merchant-key --serial S")
    headers, body = fetch_certificate_list(http, base_url=base_url, mchid=mchid, signer=current.signer, now=clock())
    certificates = read_certificate_list(
        headers, body, apiv3_keys=current.secrets, known=current.verify_keys, now=clock()
    )
    with unit_of_work(sessions) as session:
        return apply_certificate_list(session, sealer, certificates)


# --- `authsvc channel-keys ...` ------------------------------------------------------------------------------------


def _audit(session: Session, event: str, detail: dict[str, Any]) -> None:
    from authsvc.audit import service as audit

    audit.record(session, event=event, outcome="success", detail=detail)


def _command(run: Callable[[Any, Session], int]) -> int:
    from authsvc.cli import CommandError, _admin

    try:
        with _admin() as (runtime, session):
            return run(runtime, session)
    except (ChannelKeyError, RefreshError) as exc:
        raise CommandError(str(exc)) from exc


def cmd_import(args: Any) -> int:
    from pathlib import Path

    from authsvc.cli import CommandError

    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {args.file}: {exc.strerror}") from None

    def run(runtime: Any, session: Session) -> int:
        record = import_key(
            session, runtime.sealer, channel=args.channel, kind=args.kind, data=data, serial=args.serial
        )
        shown = describe(record, runtime.sealer)
        _audit(session, "channel_key_imported", {"kid": record.kid, "kind": record.label, "state": record.state})
        print(json.dumps(shown.as_dict(), indent=2))
        return 0

    return _command(run)


def cmd_list(args: Any) -> int:
    def run(runtime: Any, session: Session) -> int:
        print(json.dumps([k.as_dict() for k in list_keys(session, runtime.sealer, args.channel)], indent=2))
        return 0

    return _command(run)


def cmd_promote(args: Any) -> int:
    def run(_runtime: Any, session: Session) -> int:
        record, old = promote(session, args.kid)
        _audit(session, "channel_key_promoted", {"kid": record.kid, "retired": old.kid if old else None})
        extra = ""
        if old is not None:
            extra = f"; {old.kid} is retired"
            if old.publish_until is not None and old.publish_until > old.retired_at:  # type: ignore[operator]
                extra += f" and still decrypts until {old.publish_until.isoformat()}"
        print(f"{record.kid} is the active {record.label}{extra}")
        return 0

    return _command(run)


def cmd_retire(args: Any) -> int:
    def run(_runtime: Any, session: Session) -> int:
        record = retire(session, args.kid)
        _audit(session, "channel_key_retired", {"kid": record.kid, "kind": record.label})
        print(f"{record.kid} is retired")
        return 0

    return _command(run)


def cmd_refresh_wechatpay_certificates(_args: Any) -> int:
    from authsvc.cli import CommandError, _admin
    from payments.channels.setup import http_client

    with _admin() as (runtime, _session):
        settings = runtime.settings
        if not settings.wechatpay_mchid:
            raise CommandError("SSCARD_WECHATPAY_MCHID is not set")
        with http_client(settings.wechatpay_base_url, settings) as http:
            try:
                report = refresh_wechatpay_certificates(
                    runtime.sessions,
                    runtime.sealer,
                    http,
                    base_url=settings.wechatpay_base_url,
                    mchid=settings.wechatpay_mchid,
                )
            except (ChannelKeyError, RefreshError) as exc:
                raise CommandError(str(exc)) from exc
        with unit_of_work(runtime.sessions) as session:
            _audit(session, "wechatpay_certificates_refreshed", report.as_dict())
    print(json.dumps(report.as_dict(), indent=2))
    return 0


def add_commands(sub: Any, add: Callable[..., Any]) -> None:
    """authsvc/cli.py: the `channel-keys` command group."""
    group = sub.add_parser("channel-keys", help="payment channel keys and secrets (sealed, rotatable)")
    ck = group.add_subparsers(dest="ck", required=True)
    p = add(ck, "import", cmd_import, "store a channel key from the channel console's PEM or base64 text")
    p.add_argument("--channel", required=True, choices=CHANNELS)
    p.add_argument("--kind", required=True, help=", ".join(f"{k} ({s.channel})" for k, s in SPECS.items()))
    p.add_argument("--file", required=True, help="PEM, the console's bare base64, or the APIv3 key's 32 characters")
    p.add_argument(
        "--serial", help="the channel's name for the key: merchant certificate serial, PUB_KEY_ID_..., key id"
    )
    p = add(ck, "list", cmd_list, "list channel keys: kids, kinds, states, fingerprints (never the secrets)")
    p.add_argument("--channel", choices=CHANNELS)
    p = add(ck, "promote", cmd_promote, "make a next key active (the active one is retired)")
    p.add_argument("kid")
    p = add(ck, "retire", cmd_retire, "stop using a key now (never the last active one of its kind)")
    p.add_argument("kid")
    add(
        ck,
        "refresh-wechatpay-certificates",
        cmd_refresh_wechatpay_certificates,
        "download WeChat Pay's platform certificates, check them and store new ones (schedule it every 12 hours)",
    )
