"""Access-token checks for this service's own APIs (userinfo, the admin API, resource servers built in):
signature through the keyring's published keys, `typ` at+jwt, issuer, audience, expiry, revocation (the token's
`jti` or its grant), a still-active client, and the DPoP proof with `ath` when the token carries `cnf.jkt`.

Refusals follow RFC 6750 §3 and RFC 9449 §7.1: 401 with a `WWW-Authenticate` challenge (`Bearer` or `DPoP`),
`error="invalid_token"` and so on, and a problem+json body like every other refusal outside the OAuth endpoints.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from starlette.requests import Request

from authsvc.database import unit_of_work
from authsvc.oauth import dpop as dpop_proofs
from authsvc.oauth import grants
from authsvc.oauth.client_auth import clients
from authsvc.oidc.discovery import DPOP_ALGORITHMS
from authsvc.problems import Problem
from authsvc.registry import repository as registry
from authsvc.registry.models import TerminalStatus
from authsvc.runtime import Runtime
from authsvc.tokens.issuing import GRANT_CLAIM
from keys.signing import ALGORITHM

REALM = "sscard"
MAX_TOKEN = 8192
_DPOP_ALGS = " ".join(DPOP_ALGORITHMS)


class TokenInvalid(Exception):
    """The token is not one this service would honour now; the message says why (for logs and the challenge)."""


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', "'") + '"'


def challenge(scheme: str, error: str | None = None, description: str | None = None, **params: str) -> str:
    """One RFC 6750 / RFC 9449 challenge: `Bearer realm="sscard", error="invalid_token", ...`."""
    items = {"realm": REALM} if scheme == "Bearer" else {"algs": _DPOP_ALGS}
    if error is not None:
        items["error"] = error
    if description is not None:
        items["error_description"] = description.encode("ascii", "replace").decode()
    items.update(params)
    return scheme + " " + ", ".join(f"{k}={_quoted(v)}" for k, v in items.items())


class TokenError(Problem):
    """401 (or 403 for insufficient_scope) with a WWW-Authenticate challenge."""

    def __init__(
        self,
        status: int,
        error: str | None,
        description: str,
        *,
        scheme: str = "Bearer",
        headers: dict[str, str] | None = None,
        **params: str,
    ) -> None:
        if error is None:  # no credentials at all: offer both schemes, without an error code (RFC 6750 §3.1)
            www = challenge("Bearer") + ", " + challenge("DPoP")
        else:
            www = challenge(scheme, error, description, **params)
        super().__init__(
            status, error or "token_required", description, headers={"WWW-Authenticate": www, **(headers or {})}
        )


@dataclass(frozen=True)
class AccessToken:
    value: str
    claims: dict[str, Any]

    @property
    def subject(self) -> str:
        return self.claims["sub"]

    @property
    def client_id(self) -> str:
        return self.claims["client_id"]

    @property
    def scopes(self) -> list[str]:
        scope = self.claims.get("scope")
        return scope.split() if isinstance(scope, str) else []

    @property
    def jti(self) -> str:
        return self.claims["jti"]

    @property
    def expires_at(self) -> int:
        return int(self.claims["exp"])

    @property
    def grant_id(self) -> str | None:
        return self.claims.get(GRANT_CLAIM)

    @property
    def jkt(self) -> str | None:
        cnf = self.claims.get("cnf")
        return cnf.get("jkt") if isinstance(cnf, dict) else None

    @property
    def acr(self) -> str | None:
        return self.claims.get("acr")

    @property
    def auth_time(self) -> int | None:
        return self.claims.get("auth_time")

    @property
    def scheme(self) -> str:
        return "DPoP" if self.jkt else "Bearer"


def _revoked_jti_key(jti: str) -> str:
    return f"revoked-jti:{jti}"


def deny(runtime: Runtime, token: AccessToken, now: float | None = None) -> None:
    """Revoke one access token (RFC 7009): its jti is refused until it would have expired anyway."""
    left = token.expires_at - int(time.time() if now is None else now)
    if left > 0:
        runtime.store.put(_revoked_jti_key(token.jti), b"1", left + 1)


# Per worker: enough for every token a busy resource server presents within a token's lifetime, small enough not
# to matter (an entry is the claims of one token, well under 1 KiB).
VERIFIED_CACHE_SIZE = 8192


class VerifiedTokens:
    """Access tokens whose signature and claims have already been verified, keyed by the SHA-256 of the token.

    Only what a token says about itself is cached, since it cannot change: an entry lives until the token's `exp`
    (never longer) and only while its signing key is still published. What can change after issue (revocation of
    the token or its grant, the client being disabled) is checked on every use, cached or not. Bounded: when full,
    the oldest entry goes. Verification is most of the cost of an introspection (pyjwt's parsing and the ECDSA
    check, ~0.25 ms), and a resource server introspects the same token on every call made with it.
    """

    def __init__(self, size: int = VERIFIED_CACHE_SIZE) -> None:
        self._size = size
        self._entries: dict[bytes, tuple[dict[str, Any], str, float]] = {}
        self._lock = threading.Lock()  # decode runs on the event loop and in the thread pool

    @staticmethod
    def _key(value: str) -> bytes:
        return hashlib.sha256(value.encode()).digest()

    def get(self, runtime: Runtime, value: str, now: float) -> dict[str, Any] | None:
        key = self._key(value)
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None
        claims, kid, exp = entry
        # pyjwt refuses a token once now >= exp; so does the cache. A key withdrawn from the keyring takes its
        # tokens with it, as it would on a miss.
        if now >= exp or runtime.keyring.public_key(kid) is None:
            with self._lock:
                self._entries.pop(key, None)
            return None
        return claims

    def put(self, value: str, claims: dict[str, Any], kid: str) -> None:
        key = self._key(value)
        with self._lock:
            if len(self._entries) >= self._size and key not in self._entries:
                del self._entries[next(iter(self._entries))]  # dicts keep insertion order: the oldest
            self._entries[key] = (claims, kid, float(claims["exp"]))

    def __len__(self) -> int:
        return len(self._entries)


def verified_tokens(runtime: Runtime) -> VerifiedTokens:
    """The worker's cache (one per runtime)."""
    found = runtime.__dict__.get("_verified_tokens")
    if found is None:
        found = runtime.__dict__["_verified_tokens"] = VerifiedTokens()
    return found


def _verify(runtime: Runtime, value: str) -> tuple[dict[str, Any], str]:
    """Signature and claims (what the token says about itself); the claims and the signing key's kid."""
    try:
        header = jwt.get_unverified_header(value)
    except jwt.PyJWTError:
        raise TokenInvalid("not an access token") from None
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in ("at+jwt", "application/at+jwt"):
        raise TokenInvalid("not an access token (typ)")
    kid = header.get("kid")
    key = runtime.keyring.public_key(kid) if isinstance(kid, str) and header.get("alg") == ALGORITHM else None
    if key is None:
        raise TokenInvalid("not signed by a key of this issuer")
    s = runtime.settings
    try:
        claims = jwt.decode(
            value,
            key=key,
            algorithms=[ALGORITHM],
            audience=s.access_token_audience,
            issuer=s.issuer,
            options={"require": ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenInvalid("the access token has expired") from None
    except jwt.PyJWTError as exc:
        raise TokenInvalid(f"the access token does not verify ({type(exc).__name__})") from None
    grant_id = claims.get(GRANT_CLAIM)
    if not isinstance(claims["jti"], str) or not (grant_id is None or isinstance(grant_id, str)):
        raise TokenInvalid("the access token's jti or grant_id is malformed")  # not a shape this service issues
    return claims, kid


def decode(runtime: Runtime, value: str, now: float | None = None) -> AccessToken:
    """A valid, unrevoked access token of this issuer; raises TokenInvalid."""
    if not value or len(value) > MAX_TOKEN or value.count(".") != 2:
        raise TokenInvalid("not an access token")
    cache = verified_tokens(runtime)
    claims = cache.get(runtime, value, time.time() if now is None else now)
    if claims is None:
        claims, kid = _verify(runtime, value)
        cache.put(value, claims, kid)
    token = AccessToken(value, claims)
    # Revocation of the token and of its grant: one round trip to the store, on every use.
    keys = [_revoked_jti_key(token.jti)]
    if token.grant_id is not None:
        keys.append(grants.revoked_key(token.grant_id))
    revoked = runtime.store.get_many(keys)
    if revoked[0] is not None:
        raise TokenInvalid("the access token was revoked")
    if len(revoked) > 1 and revoked[1] is not None:
        raise TokenInvalid("the access token's grant was revoked")
    client = clients(runtime).get(str(claims["client_id"]))
    if client is None:
        # A kiosk's card login (authsvc/kiosk/) is issued to the terminal, not to an OAuth client: it is good only
        # while that terminal is, so disabling a kiosk ends its citizens' tokens at once.
        if not _terminal_active(runtime, str(claims["client_id"])):
            raise TokenInvalid("the access token's client is disabled")
    elif not client.active:
        raise TokenInvalid("the access token's client is disabled")
    return token


def _terminal_active(runtime: Runtime, terminal_id: str) -> bool:
    with unit_of_work(runtime.sessions) as db:
        found = registry.terminal(db, terminal_id[:64])
        return found is not None and found.status == TerminalStatus.ACTIVE


def from_request(runtime: Runtime, request: Request) -> AccessToken:
    """The access token of a request to one of our APIs. The URL a DPoP proof must name is the issuer plus the
    route's path, never built from the Host header."""
    return authenticate(
        runtime,
        method=request.method,
        url=runtime.settings.issuer + request.url.path,
        authorization=request.headers.get("authorization"),
        dpop=request.headers.getlist("dpop"),
    )


def authenticate(
    runtime: Runtime, *, method: str, url: str, authorization: str | None, dpop: Sequence[str] = ()
) -> AccessToken:
    """The request's access token, checked. `url` is the issuer-based URL of the resource (for DPoP `htu`);
    `dpop` the request's DPoP header values. Raises TokenError."""
    if not authorization:
        raise TokenError(401, None, "an access token is required")
    scheme, _, value = authorization.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme not in ("bearer", "dpop") or not value:
        raise TokenError(401, None, "use the Bearer or DPoP authorization scheme")
    shown = "DPoP" if scheme == "dpop" else "Bearer"
    try:
        token = decode(runtime, value)
    except TokenInvalid as exc:
        raise TokenError(401, "invalid_token", str(exc), scheme=shown) from None
    if token.jkt is None:
        if scheme == "dpop":
            raise TokenError(401, "invalid_token", "the access token is not DPoP-bound; use Bearer", scheme="DPoP")
        return token
    if scheme == "bearer":  # RFC 9449 §7.2: a bound token without its proof is worthless
        raise TokenError(401, "invalid_token", "a DPoP-bound access token needs the DPoP scheme", scheme="DPoP")
    verifier = dpop_proofs.for_runtime(runtime)
    try:
        proof = verifier.verify(dpop, method=method, url=url, access_token=value)
    except dpop_proofs.DPoPError as exc:
        nonce = {"DPoP-Nonce": verifier.nonce()} if exc.error == "use_dpop_nonce" else None
        raise TokenError(401, exc.error, exc.description, scheme="DPoP", headers=nonce) from None
    if proof is None:
        raise TokenError(401, "invalid_dpop_proof", "a DPoP proof is required", scheme="DPoP")
    if proof.jkt != token.jkt:
        raise TokenError(401, "invalid_dpop_proof", "the proof's key is not the token's key", scheme="DPoP")
    return token


def require_scope(token: AccessToken, scope: str) -> None:
    if scope not in token.scopes:
        raise TokenError(
            403, "insufficient_scope", f"the access token lacks scope {scope}", scheme=token.scheme, scope=scope
        )
