"""Token signing keys: ES256 keys in states next → active → retired, JWKS, and the signer.

Rotation rules (docs/keys.md): a key is published as `next` before it signs anything; `rotate` makes it active and
publishes a new `next`; the retired key stays published until every token it signed has expired (plus the time a
worker may still be using a cached key).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy.orm import Session, sessionmaker

from authsvc.database import lock, unit_of_work, utcnow
from keys import repository
from keys.models import KeyRecord, KeyState, Purpose
from keys.pem import private_pem, public_pem
from keys.sealing import Sealer

ALGORITHM = "ES256"


class RotationRefused(Exception):
    pass


def _new_kid(now: datetime) -> str:
    return f"sig-{now:%Y%m%d}-{secrets.token_hex(4)}"


def _generate(sealer: Sealer, state: KeyState, now: datetime) -> KeyRecord:
    private = ec.generate_private_key(ec.SECP256R1())
    return KeyRecord(
        kid=_new_kid(now),
        purpose=Purpose.SIGNING,
        algorithm=ALGORITHM,
        state=state,
        label="",
        public_pem=public_pem(private.public_key()),
        sealed_secret=sealer.seal(private_pem(private)),
        created_at=now,
        activated_at=now if state == KeyState.ACTIVE else None,
    )


def ensure(session: Session, sealer: Sealer) -> None:
    """First start: an active key and a published next key."""
    lock(session, "keys:signing")
    records = repository.by_purpose(session, Purpose.SIGNING, lock=True)
    now = utcnow()
    if not any(r.state == KeyState.ACTIVE for r in records):
        repository.add(session, _generate(sealer, KeyState.ACTIVE, now))
    if not any(r.state == KeyState.NEXT for r in records):
        repository.add(session, _generate(sealer, KeyState.NEXT, now))


def rotate(session: Session, sealer: Sealer, *, retire_for: timedelta, min_next_age: timedelta) -> tuple[str, str]:
    """Promote next to active, retire the active key, publish a new next. Returns (active kid, next kid)."""
    lock(session, "keys:signing")
    records = repository.by_purpose(session, Purpose.SIGNING, lock=True)
    now = utcnow()
    nxt = next((r for r in records if r.state == KeyState.NEXT), None)
    if nxt is None:
        raise RotationRefused("no next key is published; run `authsvc keys init` first")
    if now - nxt.created_at < min_next_age:
        wait = int((min_next_age - (now - nxt.created_at)).total_seconds()) + 1
        raise RotationRefused(
            f"the next key has been published for less than {int(min_next_age.total_seconds())} s; relying "
            f"parties may not have fetched it yet (try again in {wait} s, or --force)"
        )
    for record in records:
        if record.state == KeyState.ACTIVE:
            record.state = KeyState.RETIRED
            record.retired_at = now
            record.publish_until = now + retire_for
    nxt.state = KeyState.ACTIVE
    nxt.activated_at = now
    fresh = repository.add(session, _generate(sealer, KeyState.NEXT, now))
    return nxt.kid, fresh.kid


def published(records: list[KeyRecord], now: datetime) -> list[KeyRecord]:
    return [
        r
        for r in records
        if r.state in (KeyState.NEXT, KeyState.ACTIVE)
        or (r.state == KeyState.RETIRED and r.publish_until is not None and r.publish_until > now)
    ]


def jwk(record: KeyRecord) -> dict[str, Any]:
    assert record.public_pem is not None
    public = serialization.load_pem_public_key(record.public_pem.encode())
    key: dict[str, Any] = ECAlgorithm.to_jwk(public, as_dict=True)  # type: ignore[arg-type]
    key.update(kid=record.kid, use="sig", alg=record.algorithm)
    return key


@dataclass(frozen=True)
class _Snapshot:
    loaded_at: float
    kid: str
    private_key: ec.EllipticCurvePrivateKey
    jwks: dict[str, Any]
    public_keys: dict[str, ec.EllipticCurvePublicKey]


class Keyring:
    """What a worker signs with and publishes, re-read from the database every `cache_seconds`."""

    def __init__(self, factory: sessionmaker[Session], sealer: Sealer, *, cache_seconds: int) -> None:
        self._factory = factory
        self._sealer = sealer
        self._cache_seconds = cache_seconds
        self._snapshot: _Snapshot | None = None
        self._lock = threading.Lock()
        self._private_cache: dict[str, ec.EllipticCurvePrivateKey] = {}

    def _load(self) -> _Snapshot:
        with unit_of_work(self._factory) as session:
            records = list(repository.by_purpose(session, Purpose.SIGNING))
            now = utcnow()
            active = next((r for r in records if r.state == KeyState.ACTIVE), None)
            if active is None:
                raise LookupError("no active signing key; run `authsvc keys init`")
            if active.kid not in self._private_cache:
                private = serialization.load_pem_private_key(self._sealer.open(active.sealed_secret), password=None)
                assert isinstance(private, ec.EllipticCurvePrivateKey)
                self._private_cache = {active.kid: private}
            shown = published(records, now)
            public_keys = {}
            for r in shown:
                pub = serialization.load_pem_public_key((r.public_pem or "").encode())
                assert isinstance(pub, ec.EllipticCurvePublicKey)
                public_keys[r.kid] = pub
            return _Snapshot(
                loaded_at=time.monotonic(),
                kid=active.kid,
                private_key=self._private_cache[active.kid],
                jwks={"keys": [jwk(r) for r in shown]},
                public_keys=public_keys,
            )

    def _current(self) -> _Snapshot:
        snap = self._snapshot
        if snap is None or time.monotonic() - snap.loaded_at >= self._cache_seconds:
            with self._lock:
                snap = self._snapshot
                if snap is None or time.monotonic() - snap.loaded_at >= self._cache_seconds:
                    snap = self._snapshot = self._load()
        return snap

    def refresh(self) -> None:
        with self._lock:
            self._snapshot = self._load()

    def fresh(self, margin: float = 1.0) -> bool:
        """True when signing and verifying will not read the database for at least `margin` seconds: code on an
        event loop checks this and leaves the (rare) reload to the thread pool."""
        snap = self._snapshot
        return snap is not None and time.monotonic() + margin - snap.loaded_at < self._cache_seconds

    def jwks(self) -> dict[str, Any]:
        return self._current().jwks

    def sign(self, claims: dict[str, Any], *, typ: str = "JWT") -> str:
        snap = self._current()
        return jwt.encode(claims, snap.private_key, algorithm=ALGORITHM, headers={"kid": snap.kid, "typ": typ})

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        return self._current().public_keys.get(kid)
