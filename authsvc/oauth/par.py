"""Pushed authorization requests (RFC 9126): the client posts its authorization parameters, authenticated, and gets a
single-use `request_uri` for the browser. Everything that can be checked without a browser is checked here, so a
bad request fails at the client's back end rather than in front of a citizen.

`take_request` is what `/authorize` calls; it returns the parameters once, and only to the client that pushed them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets

from authsvc.clients.models import GrantType, OAuthClient
from authsvc.oauth import pkce
from authsvc.oauth import scopes as known_scopes
from authsvc.oauth.errors import OAuthError, invalid_request
from authsvc.store import Store

REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"
# Client authentication parameters are not authorization parameters: never stored, never seen by /authorize.
_CLIENT_AUTH = {"client_assertion", "client_assertion_type"}
MAX_VALUE = 2048
# Scopes only a client acting for itself may hold; a citizen's login never grants them.
NOT_FOR_USERS = {known_scopes.ADMIN}


def _key(request_uri: str) -> str:
    return "par:" + hashlib.sha256(request_uri.encode()).hexdigest()


def validate(client: OAuthClient, form: dict[str, str], *, dpop_jkt: str | None) -> dict[str, str]:
    """The authorization parameters to keep, checked against the client's registration; raises OAuthError."""
    if "request_uri" in form:
        raise invalid_request("request_uri must not be pushed")
    if "request" in form:
        raise OAuthError("request_not_supported", "request objects are not supported; push plain parameters")
    params = {k: v for k, v in form.items() if k not in _CLIENT_AUTH}
    too_long = next((k for k, v in params.items() if len(v) > MAX_VALUE), None)
    if too_long is not None:
        raise invalid_request(f"{too_long} is longer than {MAX_VALUE} characters")
    if params.get("client_id", client.client_id) != client.client_id:
        raise invalid_request("client_id differs from the authenticated client")
    params["client_id"] = client.client_id
    if GrantType.AUTHORIZATION_CODE not in client.grant_types:
        raise OAuthError("unauthorized_client", "the client is not registered for the authorization code grant")
    if params.get("response_type") != "code":
        raise OAuthError("unsupported_response_type", "response_type must be code")
    if params.get("redirect_uri") not in client.redirect_uris:
        raise invalid_request("redirect_uri is not registered for the client (exact match)")
    if params.get("code_challenge_method") != pkce.METHOD or not pkce.valid_challenge(params.get("code_challenge", "")):
        raise invalid_request("PKCE is required: code_challenge (S256) and code_challenge_method=S256")
    requested = known_scopes.parse(params.get("scope"))
    if not requested:
        raise OAuthError("invalid_scope", "scope is required")
    if not set(requested) <= set(client.scopes) or NOT_FOR_USERS & set(requested):
        raise OAuthError("invalid_scope", "a requested scope is not registered for the client")
    acr_values = params.get("acr_values", "").split()
    if not set(acr_values) <= set(client.acr_values):
        raise invalid_request("acr_values holds a level the client is not registered for")
    if dpop_jkt is not None:
        # RFC 9449 §10.1: a proof at PAR binds the code to its key, and must agree with an explicit dpop_jkt.
        if params.get("dpop_jkt", dpop_jkt) != dpop_jkt:
            raise OAuthError("invalid_dpop_proof", "dpop_jkt differs from the DPoP proof's key")
        params["dpop_jkt"] = dpop_jkt
    return params


def push(store: Store, client: OAuthClient, form: dict[str, str], *, ttl: int, dpop_jkt: str | None) -> str:
    params = validate(client, form, dpop_jkt=dpop_jkt)
    request_uri = REQUEST_URI_PREFIX + secrets.token_urlsafe(32)
    store.put(_key(request_uri), json.dumps({"client_id": client.client_id, "params": params}).encode(), ttl)
    return request_uri


def take_request(store: Store, request_uri: str, client_id: str) -> dict[str, str] | None:
    """The pushed parameters, once, for the client that pushed them; None if unknown, expired, used or another
    client's (which leaves it in place: a request_uri seen in a browser must not let anyone spend it)."""
    if not request_uri.startswith(REQUEST_URI_PREFIX) or len(request_uri) > 200:
        return None
    key = _key(request_uri)
    raw = store.get(key)
    if raw is None or not hmac.compare_digest(json.loads(raw)["client_id"].encode(), client_id.encode()):
        return None
    raw = store.take(key)
    return None if raw is None else dict(json.loads(raw)["params"])
