"""Server-side HMAC keys: one per use (the record's label), sealed at rest like every other key.

A keyed hash is the right tool for verifying high-entropy secrets the service generated itself (client secrets,
refresh tokens, session cookies): a database leak yields nothing usable without the key, and verification costs
microseconds. A slow password hash would protect nothing more, since the secrets are 256-bit random, and would only
cost throughput. Stored digests carry their key id, so a key can be rotated while older digests still verify.
"""

from __future__ import annotations

import hashlib
import hmac
import threading

from sqlalchemy.orm import Session, sessionmaker

from authsvc.database import unit_of_work
from keys import repository
from keys.models import KeyRecord, Purpose
from keys.sealing import Sealer

ALGORITHM = "hmac-sha256"

# Every label, in one place: `authsvc.cli.prepare` creates their keys before the service serves. A key created on
# first use inside a request would need a second transaction, which SQLite serialises behind the request's own.
CLIENT_SECRET = "client_secret"  # noqa: S105 - a label
REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a label
SESSION_COOKIE = "session_cookie"
DPOP_NONCE = "dpop_nonce"
LOGOUT_CSRF = "logout_csrf"
PAIRWISE_SUBJECT = "pairwise_subject"  # never rotated: pairwise subjects must stay stable
IDEMPOTENCY = "idempotency"  # Idempotency-Key store keys and request fingerprints (bodies hold SSNs)
LABELS = (CLIENT_SECRET, REFRESH_TOKEN, SESSION_COOKIE, DPOP_NONCE, LOGOUT_CSRF, PAIRWISE_SUBJECT, IDEMPOTENCY)


def ensure_key(session: Session, sealer: Sealer, label: str) -> KeyRecord:
    return repository.ensure_secret(
        session, sealer, purpose=Purpose.HMAC, label=label, algorithm=ALGORITHM, kid_prefix=f"hk-{label[:16]}", size=32
    )


class HmacKeys:
    """Per-process cache of opened HMAC keys. `digest` uses the active key of a label; `verify` the digest's own."""

    def __init__(self, sessions: sessionmaker[Session], sealer: Sealer) -> None:
        self._sessions = sessions
        self._sealer = sealer
        self._active: dict[str, tuple[str, bytes]] = {}
        self._by_kid: dict[str, bytes] = {}
        self._guard = threading.Lock()

    def _active_key(self, label: str) -> tuple[str, bytes]:
        found = self._active.get(label)
        if found is None:
            with self._guard, unit_of_work(self._sessions) as session:
                record = ensure_key(session, self._sealer, label)
                found = (record.kid, self._sealer.open(record.sealed_secret))
            self._active[label] = found
            self._by_kid[found[0]] = found[1]
        return found

    def _key(self, kid: str) -> bytes | None:
        key = self._by_kid.get(kid)
        if key is None:
            with unit_of_work(self._sessions) as session:
                record = repository.get(session, kid)
                if record is None or record.purpose != Purpose.HMAC:
                    return None
                key = self._by_kid[kid] = self._sealer.open(record.sealed_secret)
        return key

    def loaded(self, *, label: str | None = None, kid: str | None = None) -> bool:
        """True when `mac`/`digest` under `label`, or `verify` of a digest made with `kid`, needs no database read
        (code on an event loop checks this first)."""
        return (label is None or label in self._active) and (kid is None or kid in self._by_kid)

    def mac(self, label: str, data: bytes) -> bytes:
        """A raw MAC under the label's active key (for values that are never stored, e.g. DPoP nonces)."""
        return hmac.new(self._active_key(label)[1], data, hashlib.sha256).digest()

    def digest(self, label: str, secret: str) -> str:
        """`kid$hex`: what is stored in place of the secret."""
        kid, key = self._active_key(label)
        return f"{kid}${hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()}"

    def verify(self, stored: str, secret: str) -> bool:
        kid, _, expected = stored.partition("$")
        key = self._key(kid)
        if key is None or not expected:
            return False
        actual = hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(actual, expected)
