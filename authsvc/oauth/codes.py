"""Authorization codes (RFC 6749 §4.1): single use, short-lived, bound to the client, the redirect URI, the PKCE
challenge and (RFC 9449 §10) a DPoP key. Kept in the shared store under a hash of the code, never the code."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import asdict, dataclass

from authsvc.store import Store


@dataclass(frozen=True)
class AuthorizationCode:
    client_id: str
    redirect_uri: str
    scope: list[str]
    code_challenge: str  # S256 only
    subject: str  # the public subject; pairwise subjects are derived when tokens are made
    sid: str  # the SSO session the login belongs to
    acr: str
    amr: list[str]
    auth_time: int
    nonce: str | None = None
    dpop_jkt: str | None = None


def _key(code: str) -> str:
    return "code:" + hashlib.sha256(code.encode()).hexdigest()


def issue(store: Store, code: AuthorizationCode, ttl: int) -> str:
    value = secrets.token_urlsafe(32)
    store.put(_key(value), json.dumps(asdict(code)).encode(), ttl)
    return value


def redeem(store: Store, value: str) -> AuthorizationCode | None:
    """Spend the code: of two concurrent redemptions only one gets it."""
    if not 16 <= len(value) <= 128:
        return None
    raw = store.take(_key(value))
    return None if raw is None else AuthorizationCode(**json.loads(raw))


def remember_grant(store: Store, value: str, grant_id: str, ttl: int) -> None:
    """After redemption: a second redemption of the same code revokes this grant (RFC 6749 §4.1.2)."""
    store.put("code-spent:" + _key(value), grant_id.encode(), ttl)


def spent_grant(store: Store, value: str) -> str | None:
    if not 16 <= len(value) <= 128:
        return None
    raw = store.get("code-spent:" + _key(value))
    return None if raw is None else raw.decode()
