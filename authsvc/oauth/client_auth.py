"""Client authentication at the token, PAR, introspection and revocation endpoints.

Two methods, one per client (its registration decides) and exactly one per request:
- `client_secret_basic` (RFC 6749 §2.3.1): form-urlencoded `id:secret` in HTTP Basic, checked against the keyed
  digest in constant time.
- `private_key_jwt` (RFC 7523): an assertion signed with a key from the client's `jwks` or `jwks_uri`; `iss` = `sub`
  = client_id, `aud` the issuer or the endpoint's URL, `exp` at most an hour ahead (Authlib's default lifetime),
  `jti` single use in the shared store until `exp`.

Client rows and fetched key sets are cached per worker for `key_cache_seconds`, so the hot grants do not touch the
database: disabling a client takes effect on every worker within that time.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import httpx
import jwt
from sqlalchemy.orm import Session, sessionmaker

from authsvc.clients import service as clients_service
from authsvc.clients.models import AuthMethod, OAuthClient
from authsvc.database import unit_of_work
from authsvc.oauth.dpop import KEY_TYPES
from authsvc.oauth.errors import invalid_client, invalid_request
from authsvc.oidc.discovery import CLIENT_ASSERTION_ALGORITHMS
from authsvc.runtime import Runtime

log = logging.getLogger("sscard.oauth")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION = 8192
MAX_ASSERTION_LIFETIME = 3600
LEEWAY = 10  # seconds of clock difference allowed for iat, nbf and exp
JWKS_TIMEOUT = 3.0
JWKS_MAX_BYTES = 64 * 1024
JWKS_TTL = 300  # a fetched key set is used this long before it is fetched again
JWKS_MIN_INTERVAL = 30  # an unknown kid triggers a refetch at most this often per URI
_MISS_CACHE_MAX = 10_000
_FAILED = "client authentication failed"


@dataclass
class _Entry:
    loaded_at: float
    client: OAuthClient | None
    keys: list[tuple[dict[str, Any], jwt.PyJWK]] | None = field(default=None)


class ClientCache:
    """Client rows (detached, read-only) by client_id; unknown ids are remembered too, in a bounded map."""

    def __init__(self, sessions: sessionmaker[Session], ttl: int) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._entries: dict[str, _Entry] = {}
        self._misses = 0

    def entry(self, client_id: str) -> _Entry:
        found = self._entries.get(client_id)
        now = time.monotonic()
        if found is not None and now - found.loaded_at < self._ttl:
            return found
        with unit_of_work(self._sessions) as session:
            client = clients_service.get(session, client_id)
        found = _Entry(now, client)
        if client is None:
            self._misses += 1
            if self._misses > _MISS_CACHE_MAX:  # a flood of made-up ids must not grow the map without bound
                self._entries = {k: v for k, v in self._entries.items() if v.client is not None}
                self._misses = 0
        self._entries[client_id] = found
        return found

    def get(self, client_id: str) -> OAuthClient | None:
        if not 1 <= len(client_id) <= 64:
            return None
        return self.entry(client_id).client

    def forget(self, client_id: str) -> None:
        self._entries.pop(client_id, None)


class JwksCache:
    """Key sets fetched from clients' `jwks_uri`: bounded size, timeout, refetch on an unknown kid (rate-limited)."""

    def __init__(self) -> None:
        self._sets: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._attempts: dict[str, float] = {}
        self._lock = threading.Lock()

    def keys(self, uri: str, *, refresh: bool = False) -> list[dict[str, Any]]:
        now = time.monotonic()
        cached = self._sets.get(uri)
        stale = cached is None or now - cached[0] >= JWKS_TTL
        if (stale or refresh) and now - self._attempts.get(uri, -JWKS_MIN_INTERVAL) >= JWKS_MIN_INTERVAL:
            with self._lock:
                self._attempts[uri] = now
                fetched = _fetch_jwks(uri)
                if fetched is not None:
                    cached = self._sets[uri] = (now, fetched)
        return cached[1] if cached is not None else []


def _fetch_jwks(uri: str) -> list[dict[str, Any]] | None:
    try:
        with (
            httpx.Client(timeout=JWKS_TIMEOUT, follow_redirects=False) as http,
            http.stream("GET", uri, headers={"Accept": "application/jwk-set+json, application/json"}) as answer,
        ):
            if answer.status_code != 200:
                return None
            body = bytearray()
            for chunk in answer.iter_bytes():
                body += chunk
                if len(body) > JWKS_MAX_BYTES:
                    return None
        doc = json.loads(body)
    except (httpx.HTTPError, ValueError):
        return None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        return None
    return [k for k in keys if isinstance(k, dict) and not {"d", "p", "q", "k"} & set(k)]


class _Worker:
    def __init__(self, runtime: Runtime) -> None:
        self.clients = ClientCache(runtime.sessions, runtime.settings.key_cache_seconds)
        self.jwks = JwksCache()


def _worker(runtime: Runtime) -> _Worker:
    found = runtime.__dict__.get("_client_auth")
    if found is None:
        found = runtime.__dict__["_client_auth"] = _Worker(runtime)
    return found


def clients(runtime: Runtime) -> ClientCache:
    """The worker's cache of client rows (also used to look up a token's client)."""
    return _worker(runtime).clients


def authenticate(
    runtime: Runtime, *, authorization: str | None, form: dict[str, str], endpoint: str, now: float | None = None
) -> OAuthClient:
    """The authenticated, active client; raises OAuthError (invalid_client: 401). `endpoint` is the URL called."""
    by_header = authorization is not None
    by_assertion = "client_assertion" in form or "client_assertion_type" in form
    if "client_secret" in form:
        raise invalid_client("client_secret_post is not supported: use HTTP Basic or private_key_jwt", by_header=True)
    if by_header and by_assertion:
        raise invalid_request("use exactly one client authentication method")
    if authorization is not None:
        client = _basic(runtime, authorization, form)
    elif by_assertion:
        client = _assertion(runtime, form, endpoint, time.time() if now is None else now)
    else:
        raise invalid_client("client authentication is required", by_header=True)
    if not client.active:
        raise invalid_client("the client is disabled", by_header=by_header)
    return client


def _basic(runtime: Runtime, authorization: str, form: dict[str, str]) -> OAuthClient:
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic":
        raise invalid_client("the Authorization header must use the Basic scheme", by_header=True)
    try:
        decoded = binascii.a2b_base64(credentials.strip(), strict_mode=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise invalid_client("malformed Basic credentials", by_header=True) from None
    raw_id, colon, raw_secret = decoded.partition(":")
    if not colon:
        raise invalid_client("malformed Basic credentials", by_header=True)
    client_id, secret = unquote_plus(raw_id, errors="strict"), unquote_plus(raw_secret, errors="strict")
    if "client_id" in form and form["client_id"] != client_id:
        raise invalid_request("client_id differs from the authenticated client")
    client = clients(runtime).get(client_id)
    if (
        client is None
        or client.auth_method != AuthMethod.CLIENT_SECRET_BASIC
        or not client.secret_digest
        or not secret
        or not runtime.hmac_keys.verify(client.secret_digest, secret)
    ):
        raise invalid_client(_FAILED, by_header=True)
    return client


def _client_keys(runtime: Runtime, client: OAuthClient, *, refresh: bool) -> list[tuple[dict[str, Any], jwt.PyJWK]]:
    if client.jwks_uri:
        return _parse_keys(_worker(runtime).jwks.keys(client.jwks_uri, refresh=refresh))
    entry = clients(runtime).entry(client.client_id)
    if entry.keys is None:  # parsed once per cached row
        entry.keys = _parse_keys((client.jwks or {}).get("keys", []))
    return entry.keys


def _parse_keys(keys: list[dict[str, Any]]) -> list[tuple[dict[str, Any], jwt.PyJWK]]:
    parsed = []
    for key in keys:
        try:
            parsed.append((key, jwt.PyJWK(key)))
        except Exception:  # a malformed key in a fetched set is skipped; the others still serve
            log.warning("skipping an unusable key (kid %r) in a client's key set", key.get("kid"))
    return parsed


def _candidates(keys: list[tuple[dict[str, Any], jwt.PyJWK]], kid: Any, alg: str) -> list[Any]:
    kty, crv = KEY_TYPES[alg]
    found = []
    for data, key in keys:
        if kid is not None and data.get("kid") != kid:
            continue
        if data.get("kty") != kty or (crv is not None and data.get("crv") != crv):
            continue
        if data.get("alg") not in (None, alg) or data.get("use") not in (None, "sig"):
            continue
        found.append(key.key)
    return found


def _assertion(runtime: Runtime, form: dict[str, str], endpoint: str, now: float) -> OAuthClient:
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise invalid_client(f"client_assertion_type must be {ASSERTION_TYPE}", by_header=False)
    assertion = form.get("client_assertion", "")
    if not assertion or len(assertion) > MAX_ASSERTION:
        raise invalid_client("client_assertion is missing or too long", by_header=False)
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise invalid_client("client_assertion is not a JWT", by_header=False) from None
    alg = header.get("alg")
    if alg not in CLIENT_ASSERTION_ALGORITHMS:
        raise invalid_client(
            f"assertions must be signed with {', '.join(CLIENT_ASSERTION_ALGORITHMS)}", by_header=False
        )
    client_id = unverified.get("iss")
    if not isinstance(client_id, str) or ("client_id" in form and form["client_id"] != client_id):
        raise invalid_client(_FAILED, by_header=False)
    client = clients(runtime).get(client_id)
    if client is None or client.auth_method != AuthMethod.PRIVATE_KEY_JWT:
        raise invalid_client(_FAILED, by_header=False)
    kid = header.get("kid")
    keys = _candidates(_client_keys(runtime, client, refresh=False), kid, alg)
    if not keys and client.jwks_uri:
        keys = _candidates(_client_keys(runtime, client, refresh=True), kid, alg)  # the client may have rotated
    claims = None
    for key in keys:
        try:
            claims = jwt.decode(
                assertion,
                key=key,
                algorithms=[alg],
                audience=[runtime.settings.issuer, endpoint],
                issuer=client_id,
                leeway=LEEWAY,
                options={"require": ["iss", "sub", "aud", "exp", "jti"], "verify_iat": True},
            )
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as exc:
            raise invalid_client(f"client_assertion refused: {_why(exc)}", by_header=False) from None
    if claims is None:
        raise invalid_client("client_assertion is not signed by a key registered for the client", by_header=False)
    if claims["sub"] != client_id:
        raise invalid_client("client_assertion: sub must be the client_id", by_header=False)
    exp, jti = claims["exp"], claims["jti"]
    if exp > now + MAX_ASSERTION_LIFETIME + LEEWAY:
        raise invalid_client(f"client_assertion: exp is more than {MAX_ASSERTION_LIFETIME} s ahead", by_header=False)
    if not isinstance(jti, str) or not 1 <= len(jti) <= 256:
        raise invalid_client("client_assertion: jti must be a string of 1-256 characters", by_header=False)
    spent = hashlib.sha256(jti.encode()).hexdigest()[:32]
    if not runtime.store.add(f"assertion-jti:{client_id}:{spent}", b"1", max(1, int(exp - now) + LEEWAY)):
        raise invalid_client("client_assertion was already used (jti)", by_header=False)
    return client


def _why(exc: jwt.PyJWTError) -> str:
    return {
        jwt.ExpiredSignatureError: "expired",
        jwt.InvalidAudienceError: "aud must be the issuer or this endpoint's URL",
        jwt.InvalidIssuerError: "iss must be the client_id",
        jwt.ImmatureSignatureError: "issued in the future",
        jwt.MissingRequiredClaimError: "iss, sub, aud, exp and jti are required",
    }.get(type(exc), "malformed claims")
