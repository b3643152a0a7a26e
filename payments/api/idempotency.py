"""`Idempotency-Key` for creating calls, in the shared store (single-key atomic operations only).

A first request claims the key with `add` (an in-flight marker with a short TTL). It then does its work and commits;
only after the commit does it `put` the response under the same key for RETAIN_SECONDS. If it fails before that (a
refusal, a failed commit) it releases the marker, so nothing is stored that the database does not hold and the
caller may retry. A request finding the marker gets 409 (`idempotency_in_progress`); finding the stored response it
gets the same status and bytes if its body is the same, 422 (`idempotency_key_reused`) if not.

The database keeps the key too (`Claim.key_digest`, in a unique column of the created row): when the store has no
response for a key that did create a row (a worker died between the commit and the `put`), the row answers for it
(payments/api/orders.py).

Keys are scoped per caller (client and subject) and, like the body fingerprints, stored only as HMACs under the
`idempotency` key: a body holds an SSN, and a plain hash of one could be searched for.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
from dataclasses import dataclass

from fastapi.responses import Response

from authsvc.problems import Problem
from authsvc.runtime import Runtime
from keys import hmac_keys

HEADER = "Idempotency-Key"
MAX_KEY = 255
# Longer than any request may take (the database pool's and statement timeouts are far shorter); a worker that
# dies mid-request holds the key at most this long.
IN_FLIGHT_SECONDS = 60
RETAIN_SECONDS = 25 * 3600  # at least 24 hours, as promised to callers, plus slack for clock and retry drift


@dataclass(frozen=True)
class Claim:
    """A key this request holds (its marker is in the store)."""

    store_key: str
    key_digest: str  # the caller's key as HMAC, also kept on the row the request creates (the database's guard)
    fingerprint: str
    marker: bytes


@dataclass(frozen=True)
class Stored:
    status: int
    media_type: str
    body: bytes


def response(stored: Stored, *, replayed: bool) -> Response:
    """The HTTP answer of a response kept (or to be kept) under a key: never cached, and marked
    `Idempotent-Replayed` when it answers a repeat."""
    headers = {"Cache-Control": "no-store"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(stored.body, status_code=stored.status, media_type=stored.media_type, headers=headers)


def check_key(value: str | None) -> str:
    if value is None:
        raise Problem(400, "idempotency_key_required", f"creating calls need an {HEADER} header")
    if not 1 <= len(value) <= MAX_KEY or not all(" " <= c <= "~" for c in value):
        raise Problem(400, "idempotency_key_invalid", f"{HEADER} must be 1 to {MAX_KEY} printable ASCII characters")
    return value


def _mac(runtime: Runtime, *parts: bytes) -> str:
    # Length-prefixed parts: ("a", "bc") and ("ab", "c") must not collide.
    data = b"".join(len(p).to_bytes(4, "big") + p for p in parts)
    return runtime.hmac_keys.mac(hmac_keys.IDEMPOTENCY, data).hex()


def begin(runtime: Runtime, *, scope: str, client_id: str, subject: str, key: str, body: bytes) -> Claim | Stored:
    """Claim the key, or the stored response to replay; raises Problem 409/422 otherwise."""
    key_digest = _mac(runtime, client_id.encode(), subject.encode(), key.encode())
    store_key = f"idem:{scope}:{key_digest}"
    fingerprint = _mac(runtime, body)
    marker = json.dumps({"running": secrets.token_hex(8), "fp": fingerprint}).encode()
    if runtime.store.add(store_key, marker, IN_FLIGHT_SECONDS):
        return Claim(store_key, key_digest, fingerprint, marker)
    found = runtime.store.get(store_key)
    if found is None:  # the holder released or expired between our add and get: one more try is enough
        if runtime.store.add(store_key, marker, IN_FLIGHT_SECONDS):
            return Claim(store_key, key_digest, fingerprint, marker)
        found = runtime.store.get(store_key)
    record = json.loads(found) if found else {"running": "?"}
    if "running" in record:
        raise Problem(409, "idempotency_in_progress", f"a request with this {HEADER} is still being processed")
    check_same_body(record["fp"], fingerprint)
    return Stored(record["status"], record["media_type"], base64.b64decode(record["body"]))


def check_same_body(kept: str, fingerprint: str) -> None:
    """422 `idempotency_key_reused` unless the key's response was made from this body. The fingerprints are MACs:
    compared in constant time."""
    if not hmac.compare_digest(kept, fingerprint):
        raise Problem(422, "idempotency_key_reused", f"this {HEADER} was used with another request body")


def finish(runtime: Runtime, claim: Claim, response: Stored, *, fingerprint: str | None = None) -> None:
    """Keep the response (call only after the commit): replaces the marker. `fingerprint` is the body the response
    belongs to when that was not this request's (a response rebuilt from a row an earlier request created)."""
    record = {
        "fp": fingerprint or claim.fingerprint,
        "status": response.status,
        "media_type": response.media_type,
        "body": base64.b64encode(response.body).decode(),
    }
    runtime.store.put(claim.store_key, json.dumps(record).encode(), RETAIN_SECONDS)


def release(runtime: Runtime, claim: Claim) -> None:
    """Give the key back after a failure, so the caller may retry. Only our own marker is removed: if ours expired
    and another request claimed the key meanwhile, its marker is put back."""
    taken = runtime.store.take(claim.store_key)
    if taken is not None and taken != claim.marker:
        running = "running" in json.loads(taken)
        runtime.store.put(claim.store_key, taken, IN_FLIGHT_SECONDS if running else RETAIN_SECONDS)
