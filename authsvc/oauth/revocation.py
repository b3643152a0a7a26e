"""Token revocation (RFC 7009). A refresh token revokes its whole grant (and so the grant's access tokens); an
access token is refused until it would have expired. Only the client a token was issued to can revoke it; for any
other token the answer is the same 200, so the endpoint tells nobody whether a token exists."""

from __future__ import annotations

from authsvc.clients.models import OAuthClient
from authsvc.database import unit_of_work
from authsvc.oauth import grants
from authsvc.oauth.introspection import is_refresh_token
from authsvc.oauth.resource import TokenInvalid, decode, deny
from authsvc.runtime import Runtime


def revoke(runtime: Runtime, caller: OAuthClient, value: str) -> None:
    if is_refresh_token(value):
        with unit_of_work(runtime.sessions) as db:
            found = grants.find_refresh_token(db, runtime, value)
            if found is not None and found[1].client_id == caller.client_id:
                grants.revoke(db, runtime, found[1], "revoked_by_client")
        return
    try:
        token = decode(runtime, value)
    except TokenInvalid:
        return  # expired, revoked or not ours: nothing left to do
    if token.client_id == caller.client_id:
        deny(runtime, token)
