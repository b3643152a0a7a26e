"""ID tokens (OpenID Connect Core §2) and access tokens (RFC 9068, `typ` at+jwt), signed through keys/."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from keys.signing import Keyring


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
