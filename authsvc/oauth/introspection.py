"""Token introspection (RFC 7662) for resource servers: clients registered with `may_introspect`.

Anything this service would not honour now (malformed, forged, expired, revoked, of a disabled client, a spent
refresh token) is `{"active": false}` and nothing more: the caller learns no reason.
"""

from __future__ import annotations

import re
from typing import Any

from authsvc.clients.models import OAuthClient
from authsvc.database import unit_of_work, utcnow
from authsvc.oauth import client_auth, grants
from authsvc.oauth.client_auth import clients
from authsvc.oauth.errors import OAuthError
from authsvc.oauth.forms import required
from authsvc.oauth.resource import TokenInvalid, decode
from authsvc.oidc.subjects import subject_for
from authsvc.runtime import Runtime

INACTIVE: dict[str, Any] = {"active": False}
_REFRESH_SHAPE = re.compile(r"[0-9a-f]{32}\.[A-Za-z0-9_-]{43}")
_ACCESS_CLAIMS = ("scope", "client_id", "sub", "exp", "iat", "iss", "aud", "jti", "auth_time", "acr", "amr", "cnf")


def token_of(caller: OAuthClient, form: dict[str, str]) -> str:
    if not caller.may_introspect:
        raise OAuthError("unauthorized_client", "the client is not registered as a resource server", 403)
    return required(form, "token")


def is_refresh_token(value: str) -> bool:
    """Refresh tokens need the database; access tokens (JWTs) do not: the route picks the thread pool by this."""
    return _REFRESH_SHAPE.fullmatch(value) is not None


def runs_inline(runtime: Runtime, form: dict[str, str], *, authorization: str | None) -> bool:
    """Whether this introspection may run on the event loop: an access token (a refresh token needs the database),
    the caller's client and the token's client cached, the signing keys loaded. The revocation checks (one round
    trip to the shared store) stay inline."""
    value = form.get("token", "")
    if is_refresh_token(value) or not runtime.keyring.fresh():
        return False
    if not client_auth.ready(runtime, authorization=authorization, form=form):
        return False
    peeked = client_auth.peek(value)
    owner = peeked[1].get("client_id") if peeked is not None else None
    # A token that names no client fails verification before any lookup.
    return not isinstance(owner, str) or clients(runtime).fresh(owner) is not None


def access_token(runtime: Runtime, value: str) -> dict[str, Any]:
    try:
        token = decode(runtime, value)
    except TokenInvalid:
        return INACTIVE
    body: dict[str, Any] = {"active": True, "token_type": token.scheme}
    body.update({k: token.claims[k] for k in _ACCESS_CLAIMS if k in token.claims})
    return body


def refresh_token(runtime: Runtime, value: str) -> dict[str, Any]:
    now = utcnow()
    with unit_of_work(runtime.sessions) as db:
        found = grants.find_refresh_token(db, runtime, value)
        if found is None:
            return INACTIVE
        token, grant = found
        if token.used_at is not None or token.expires_at <= now or not grants.live(grant, now):
            return INACTIVE
        owner = clients(runtime).get(grant.client_id)
        if owner is None or not owner.active:
            return INACTIVE
        return {
            "active": True,
            "token_type": "refresh_token",
            "client_id": grant.client_id,
            "scope": grant.scope,
            "sub": subject_for(owner, grant.subject, runtime.hmac_keys),
            "iss": runtime.settings.issuer,
            "iat": int(token.created_at.timestamp()),
            "exp": int(token.expires_at.timestamp()),
            "auth_time": int(grant.auth_time.timestamp()),
            "acr": grant.acr,
        }


def introspect(runtime: Runtime, value: str) -> dict[str, Any]:
    return refresh_token(runtime, value) if is_refresh_token(value) else access_token(runtime, value)
