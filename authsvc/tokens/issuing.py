"""ID tokens (OpenID Connect Core §2) and access tokens (RFC 9068, `typ` at+jwt), signed through keys/."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from card.request_signing import b64url
from keys.signing import Keyring

# The access-token claim naming the grant it was issued under (absent for client credentials).
GRANT_CLAIM = "grant_id"


@dataclass(frozen=True)
class Authentication:
    subject: str
    auth_time: int
    acr: str
    amr: list[str]


@dataclass(frozen=True)
class TokenSet:
    id_token: str
    access_token: str
    expires_in: int


def issue(
    keyring: Keyring,
    *,
    issuer: str,
    client_id: str,
    audience: str,
    auth: Authentication,
    id_ttl: int,
    access_ttl: int,
    scope: str = "openid",
    now: int | None = None,
) -> TokenSet:
    now = int(time.time()) if now is None else now
    common = {
        "iss": issuer,
        "sub": auth.subject,
        "iat": now,
        "auth_time": auth.auth_time,
        "acr": auth.acr,
        "amr": auth.amr,
    }
    id_token = keyring.sign({**common, "aud": client_id, "exp": now + id_ttl, "jti": secrets.token_urlsafe(16)})
    access_token = keyring.sign(
        {
            **common,
            "aud": audience,
            "exp": now + access_ttl,
            "client_id": client_id,
            "scope": scope,
            "jti": secrets.token_urlsafe(16),
        },
        typ="at+jwt",
    )
    return TokenSet(id_token=id_token, access_token=access_token, expires_in=access_ttl)


def at_hash(access_token: str) -> str:
    """OpenID Connect Core §3.1.3.6: the left half of the access token's SHA-256 (the hash of ES256)."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return b64url(digest[:16])


def access_token(
    keyring: Keyring,
    *,
    issuer: str,
    audience: str,
    client_id: str,
    subject: str,
    scope: str,
    ttl: int,
    auth: Authentication | None = None,
    jkt: str | None = None,
    grant_id: str | None = None,
    now: int | None = None,
) -> tuple[str, str]:
    """An RFC 9068 access token and its `jti`. `subject` is what the client knows (pairwise where it is);
    `grant_id` ties the token to its grant so that revoking the grant reaches it; `jkt` binds it to a DPoP key."""
    now = int(time.time()) if now is None else now
    jti = secrets.token_urlsafe(16)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "exp": now + ttl,
        "iat": now,
        "jti": jti,
        "client_id": client_id,
        "scope": scope,
    }
    if auth is not None:
        claims.update(auth_time=auth.auth_time, acr=auth.acr, amr=auth.amr)
    if grant_id is not None:
        claims[GRANT_CLAIM] = grant_id
    if jkt is not None:
        claims["cnf"] = {"jkt": jkt}
    return keyring.sign(claims, typ="at+jwt"), jti


def id_token(
    keyring: Keyring,
    *,
    issuer: str,
    client_id: str,
    subject: str,
    auth: Authentication,
    ttl: int,
    nonce: str | None = None,
    sid: str | None = None,
    access_token: str | None = None,
    now: int | None = None,
) -> str:
    """An ID token for `client_id`; `subject` is already the client's (pairwise where it is)."""
    now = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": client_id,
        "exp": now + ttl,
        "iat": now,
        "auth_time": auth.auth_time,
        "acr": auth.acr,
        "amr": auth.amr,
    }
    if nonce is not None:
        claims["nonce"] = nonce
    if sid is not None:
        claims["sid"] = sid
    if access_token is not None:
        claims["at_hash"] = at_hash(access_token)
    return keyring.sign(claims)
