"""Channel keys in `key_material`: importing, listing, promoting and retiring them (the rules per role are in
keys/channel_keys/__init__.py), and opening them for the adapters (ChannelMaterial, ChannelKeyring).
Secrets are opened only in `import_key` (to refuse a duplicate APIv3 key), `describe` (a check value) and `material`.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from authsvc.database import lock, unit_of_work, utcnow
from keys.channel_keys.kinds import (
    CHANNELS,
    PURPOSE_PREFIX,
    SPECS,
    ChannelKeyError,
    Kind,
    Role,
    check_asymmetric,
    fingerprint,
    load_certificate,
    load_private,
    load_public,
    purpose,
    secret_check_value,
    spec,
)
from keys.models import KeyRecord, KeyState
from keys.pem import private_pem, public_pem
from keys.sealing import Sealer

# WeChat Pay retries a notification 15 times over about 24 h 4 min; a day and an hour covers the last retry of one
# encrypted under the old key just before the switch.
APIV3_SWITCH_WINDOW = timedelta(hours=25)
_MAX_INPUT = 64 * 1024


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


def channel_records(
    session: Session, channel: str, kind: str | None = None, *, for_update: bool = False
) -> list[KeyRecord]:
    """A channel's rows (of one kind if given), oldest first; `for_update` locks them for a state change."""
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


def lock_channel(session: Session, channel: str) -> None:
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
        algorithm = check_asymmetric(cert.public_key(), "rsa")
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

    lock_channel(session, channel)
    existing = channel_records(session, channel, known, for_update=True)
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
    return [describe(r, sealer) for c in ([channel] if channel else CHANNELS) for r in channel_records(session, c)]


def _owned(session: Session, kid: str) -> KeyRecord:
    record = session.get(KeyRecord, kid)
    if record is None or not record.purpose.startswith(PURPOSE_PREFIX):
        raise ChannelKeyError(f"no channel key {kid[:64]!r}")
    return record


def mark_retired(record: KeyRecord, now: datetime, *, grace: timedelta = timedelta(0)) -> None:
    """Set a row retired (a decrypt key keeps decrypting for `grace`); callers hold `lock_channel` and flush."""
    record.state = KeyState.RETIRED
    record.retired_at = now
    record.publish_until = now + grace


def promote(session: Session, kid: str, *, now: datetime | None = None) -> tuple[KeyRecord, KeyRecord | None]:
    """A `next` key becomes the active one of its kind; the previous active key is retired (an APIv3 key keeps
    decrypting for the switch window). Returns (promoted, retired)."""
    now = now or utcnow()
    record = _owned(session, kid)
    channel = record.purpose.removeprefix(PURPOSE_PREFIX)
    lock_channel(session, channel)
    session.refresh(record, with_for_update=True)
    if record.state != KeyState.NEXT:
        raise ChannelKeyError(f"{kid} is {record.state}: only a next key can be promoted")
    kind = Kind(record.label)
    old = next(
        (r for r in channel_records(session, channel, kind, for_update=True) if r.state == KeyState.ACTIVE), None
    )
    if old is not None:
        mark_retired(old, now, grace=APIV3_SWITCH_WINDOW if kind is Kind.APIV3_KEY else timedelta(0))
    record.state = KeyState.ACTIVE
    record.activated_at = now
    session.flush()
    return record, old


def import_active(
    session: Session, sealer: Sealer, *, channel: str, kind: str, data: bytes, serial: str | None
) -> KeyRecord:
    """Import a key the counterpart uses already and make it the active one of its kind at once (the previous one
    retired). For sandboxes started with fresh keys (the demo): a real channel's key goes through `next` first."""
    record = import_key(session, sealer, channel=channel, kind=kind, data=data, serial=serial)
    if record.state == KeyState.NEXT:
        record, _ = promote(session, record.kid)
    return record


def retire(session: Session, kid: str, *, now: datetime | None = None) -> KeyRecord:
    """Stop using a key at once (a retired APIv3 key decrypts nothing more). The last active key of a kind (of the
    platform keys: of certificates and public keys together) cannot be retired: promote its successor instead."""
    now = now or utcnow()
    record = _owned(session, kid)
    channel = record.purpose.removeprefix(PURPOSE_PREFIX)
    lock_channel(session, channel)
    session.refresh(record, with_for_update=True)
    if record.state == KeyState.RETIRED:
        if record.publish_until is not None and record.publish_until > now:
            mark_retired(record, now)  # end an APIv3 switch window early
            session.flush()
            return record
        raise ChannelKeyError(f"{kid} is already retired")
    if record.state == KeyState.ACTIVE:
        kspec = SPECS[Kind(record.label)]
        kinds = [k for k, s in SPECS.items() if s.channel == channel and s.group and s.group == kspec.group]
        others = [
            r
            for k in kinds or [Kind(record.label)]
            for r in channel_records(session, channel, k, for_update=True)
            if r.state == KeyState.ACTIVE and r.kid != kid
        ]
        if not others:
            raise ChannelKeyError(
                f"{kid} is the only active {record.label} of {channel}: import and promote its successor first"
            )
    mark_retired(record, now)
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
    records = sorted(channel_records(session, channel), key=lambda r: (_ORDER.get(r.state, 3), r.created_at))
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
