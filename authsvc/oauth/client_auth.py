"""Client authentication at the token, PAR, introspection and revocation endpoints.

Two methods, one per client (its registration decides) and exactly one per request:
- `client_secret_basic` (RFC 6749 §2.3.1): form-urlencoded `id:secret` in HTTP Basic, checked against the keyed
  digest in constant time.
- `private_key_jwt` (RFC 7523): an assertion signed with a key from the client's `jwks` or `jwks_uri`; `iss` = `sub`
  = client_id, `aud` the issuer or the endpoint's URL (FAPI clients: exactly the issuer, as a string), `exp` at most
  an hour ahead (Authlib's default lifetime), `jti` single use in the shared store until `exp`.

Client rows and fetched key sets are cached per worker for `key_cache_seconds`, so the hot grants do not touch the
database: disabling a client takes effect on every worker within that time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
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
ParsedKeys = list[tuple[dict[str, Any], jwt.PyJWK]]  # (the JWK as published, the key pyjwt verifies with)


@dataclass
class _Entry:
    loaded_at: float
    client: OAuthClient | None
    keys: ParsedKeys | None = field(default=None)


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

    def fresh(self, client_id: str, margin: float = 1.0) -> _Entry | None:
        """The cached entry if it will serve `margin` more seconds without a database read (absent ids included)."""
        found = self._entries.get(client_id)
        if found is not None and time.monotonic() + margin - found.loaded_at < self._ttl:
            return found
        return None

    def get(self, client_id: str) -> OAuthClient | None:
        if not 1 <= len(client_id) <= 64:
            return None
        return self.entry(client_id).client

    def forget(self, client_id: str) -> None:
        self._entries.pop(client_id, None)


@dataclass
class _KeySet:
    keys: ParsedKeys = field(default_factory=list)
    fetched_at: float = -math.inf  # last successful fetch (monotonic)
    attempted_at: float = -math.inf  # last attempt, successful or not
    lock: threading.Lock = field(default_factory=threading.Lock)

    def due(self, now: float, *, refresh: bool) -> bool:
        """A fetch is due: the set is stale (or an unknown kid asks for a refresh) and the rate limit allows."""
        return (refresh or now - self.fetched_at >= JWKS_TTL) and now - self.attempted_at >= JWKS_MIN_INTERVAL


class JwksCache:
    """Key sets fetched from clients' `jwks_uri`, parsed once per fetch: bounded size and time per fetch, refetch on
    an unknown kid (at most every JWKS_MIN_INTERVAL per URI). A failed fetch keeps the last good set. One fetch per
    URI at a time; requests of other clients never wait for it."""

    def __init__(self) -> None:
        self._sets: dict[str, _KeySet] = {}  # one per registered jwks_uri: clients are registered by operators
        self._guard = threading.Lock()

    def _set(self, uri: str) -> _KeySet:
        found = self._sets.get(uri)
        if found is None:
            with self._guard:
                found = self._sets.setdefault(uri, _KeySet())
        return found

    def keys(self, uri: str, *, refresh: bool = False) -> ParsedKeys:
        entry = self._set(uri)
        if entry.due(time.monotonic(), refresh=refresh):
            with entry.lock:
                now = time.monotonic()
                if entry.due(now, refresh=refresh):  # not fetched by another thread meanwhile
                    entry.attempted_at = now
                    fetched = _fetch_jwks(uri)
                    if fetched is not None:
                        entry.keys, entry.fetched_at = _parse_keys(fetched), time.monotonic()
        return entry.keys

    def ready(self, uri: str, kid: Any, alg: str, margin: float = 1.0) -> bool:
        """True when `keys` for an assertion with this kid and alg would not fetch (see client_auth.ready)."""
        entry = self._sets.get(uri)
        if entry is None:
            return False
        later = time.monotonic() + margin
        if entry.due(later, refresh=False):
            return False
        return bool(_candidates(entry.keys, kid, alg)) or not entry.due(later, refresh=True)


def _fetch_jwks(uri: str) -> list[dict[str, Any]] | None:
    """The public keys at `uri`, or None (logged) if it is down, slow, too large or not a JWK Set."""
    deadline = time.monotonic() + JWKS_TIMEOUT
    try:
        with (
            httpx.Client(timeout=JWKS_TIMEOUT, follow_redirects=False) as http,
            http.stream("GET", uri, headers={"Accept": "application/jwk-set+json, application/json"}) as answer,
        ):
            if answer.status_code != 200:
                log.warning("jwks_uri %s answered %d", uri, answer.status_code)
                return None
            body = bytearray()
            # httpx's timeout bounds each read; the deadline bounds the whole (a server dripping bytes).
            for chunk in answer.iter_bytes():
                body += chunk
                if len(body) > JWKS_MAX_BYTES or time.monotonic() > deadline:
                    log.warning(
                        "jwks_uri %s: key set larger than %d bytes or slower than %s s",
                        uri,
                        JWKS_MAX_BYTES,
                        JWKS_TIMEOUT,
                    )
                    return None
        doc = json.loads(body)
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("jwks_uri %s could not be fetched (%s)", uri, type(exc).__name__)
        return None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        log.warning("jwks_uri %s did not return a JWK Set", uri)
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


def peek(value: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A compact JWT's header and claims, unverified and leniently parsed, or None. Only for deciding where a request
    runs (ready): whatever it says is checked again, strictly, by pyjwt."""
    try:
        header, claims = (
            json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))) for part in value.split(".")[:2]
        )
    except (ValueError, TypeError):
        return None
    return (header, claims) if isinstance(header, dict) and isinstance(claims, dict) else None


def _basic_client_id(authorization: str) -> str | None:
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = binascii.a2b_base64(credentials.strip(), strict_mode=True).decode("utf-8")
        return unquote_plus(decoded.partition(":")[0], errors="strict")
    except (binascii.Error, ValueError):
        return None


def ready(runtime: Runtime, *, authorization: str | None, form: dict[str, str], margin: float = 1.0) -> bool:
    """Whether `authenticate` would complete without the database or the network, so that it may run on the event
    loop: the client's row is cached (or known not to exist) and its keys are in hand (the HMAC key of its secret's
    digest; a `jwks_uri` key set fetched, fresh and holding the assertion's kid). Requests it cannot make sense of
    are ready: authenticate refuses them before any I/O. The shared store's SET NX for an assertion's jti remains."""
    if authorization is not None:
        client_id = _basic_client_id(authorization)
        if client_id is None:
            return True
        entry = clients(runtime).fresh(client_id, margin)
        if entry is None:
            return False
        digest = entry.client.secret_digest if entry.client is not None else None
        return not digest or runtime.hmac_keys.loaded(kid=digest.partition("$")[0])
    peeked = peek(form.get("client_assertion", ""))
    if peeked is None:
        return True
    header, claims = peeked
    client_id, alg = claims.get("iss"), header.get("alg")
    if not isinstance(client_id, str) or alg not in CLIENT_ASSERTION_ALGORITHMS:
        return True
    entry = clients(runtime).fresh(client_id, margin)
    if entry is None:
        return False
    client = entry.client
    if client is None or client.auth_method != AuthMethod.PRIVATE_KEY_JWT or not client.jwks_uri:
        return True  # refused, or keys from the registration itself (parsed in memory)
    return _worker(runtime).jwks.ready(client.jwks_uri, header.get("kid"), alg, margin)


def authenticate(
    runtime: Runtime,
    *,
    authorization: str | None,
    form: dict[str, str],
    endpoint: str,
    now: float | None = None,
    public: bool = False,
) -> OAuthClient:
    """The authenticated, active client; raises OAuthError (invalid_client: 401). `endpoint` is the URL called.
    `public`: a public client (auth method none) may identify itself by `client_id` alone (the token endpoint)."""
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
        client = _public(runtime, form) if public else None
        if client is None:
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
        raw_id, colon, raw_secret = decoded.partition(":")
        # Percent-decoding is strict (RFC 6749 §2.3.1): a %-escape that is not UTF-8 raises UnicodeDecodeError.
        client_id, secret = unquote_plus(raw_id, errors="strict"), unquote_plus(raw_secret, errors="strict")
    except (binascii.Error, ValueError):
        raise invalid_client("malformed Basic credentials", by_header=True) from None
    if not colon:
        raise invalid_client("malformed Basic credentials", by_header=True)
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


def _public(runtime: Runtime, form: dict[str, str]) -> OAuthClient | None:
    """RFC 6749 §3.2.1: a public client names itself with client_id; only a client registered as public may."""
    client_id = form.get("client_id")
    client = clients(runtime).get(client_id) if isinstance(client_id, str) else None
    return client if client is not None and client.auth_method == AuthMethod.NONE else None


def _client_keys(runtime: Runtime, client: OAuthClient, *, refresh: bool) -> ParsedKeys:
    if client.jwks_uri:
        return _worker(runtime).jwks.keys(client.jwks_uri, refresh=refresh)
    entry = clients(runtime).entry(client.client_id)
    if entry.keys is None:  # parsed once per cached row
        entry.keys = _parse_keys((client.jwks or {}).get("keys", []))
    return entry.keys


def _parse_keys(keys: list[dict[str, Any]]) -> ParsedKeys:
    parsed = []
    for key in keys:
        try:
            parsed.append((key, jwt.PyJWK(key)))
        except Exception:  # a malformed key in a fetched set is skipped; the others still serve
            log.warning("skipping an unusable key (kid %r) in a client's key set", key.get("kid"))
    return parsed


def _candidates(keys: ParsedKeys, kid: Any, alg: str) -> list[Any]:
    kty, crv = KEY_TYPES[alg]
    found = []
    for data, key in keys:
        if kid is not None and data.get("kid") != kid:
            continue
        if data.get("kty") != kty or (crv is not None and data.get("crv") != crv):
            continue
        if data.get("alg") not in (None, alg) or data.get("use") not in (None, "sig"):
            continue
        if kty == "RSA" and key.key.key_size < clients_service.MIN_RSA_BITS:  # keys fetched from a jwks_uri too
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
    if client.fapi and claims["aud"] != runtime.settings.issuer:
        # FAPI 2.0 §5.3.2.1 (after the 2025 audience-injection findings): the issuer, as a single string, is the
        # only audience accepted, so an assertion made for another server or endpoint can never be replayed here.
        raise invalid_client("client_assertion: a FAPI client's aud must be exactly the issuer", by_header=False)
    exp, jti = claims["exp"], claims["jti"]
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        # pyjwt accepts any value int() takes, "1800000000" included; RFC 7519 §2 NumericDate is a JSON number.
        raise invalid_client("client_assertion: exp must be a number", by_header=False)
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
