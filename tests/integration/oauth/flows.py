"""Requests to the token side as a client library would make them (in-process TestClient)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi.testclient import TestClient

from authsvc.clients.models import AuthMethod
from authsvc.runtime import Runtime
from tests.fixtures.oidc import (
    PKCE_VERIFIER,
    RegisteredClient,
    assertion_form,
    basic_auth,
    dpop_proof,
    issue_code,
    register_client,
)

ISSUER = "http://testserver"
CARD_PIN = "urn:sscard:acr:substantial"
CARD = "urn:sscard:acr:low"


def post(client: TestClient, path: str, data: dict[str, str], headers: dict[str, str] | None = None) -> Any:
    return client.post(
        path,
        content=urlencode(data),
        headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
    )


def authed(
    client: TestClient, path: str, rc: RegisteredClient, data: dict[str, str], headers: dict[str, str] | None = None
) -> Any:
    """POST with the client's own authentication method (a public client names itself with client_id)."""
    if rc.registration["token_endpoint_auth_method"] == AuthMethod.NONE:
        return post(client, path, {**data, "client_id": rc.client_id}, headers)
    if rc.secret is not None:
        return post(client, path, data, {"Authorization": basic_auth(rc.client_id, rc.secret), **(headers or {})})
    audience = ISSUER if rc.registration["fapi"] else ISSUER + path  # FAPI: the issuer is the only audience
    return post(client, path, {**data, **assertion_form(rc, audience)}, headers)


def secret_client(runtime: Runtime, **spec: Any) -> RegisteredClient:
    return register_client(runtime, auth_method=AuthMethod.CLIENT_SECRET_BASIC, **spec)


def code_grant(
    client: TestClient,
    runtime: Runtime,
    rc: RegisteredClient,
    *,
    dpop_key: Any = None,
    **code: Any,
) -> Any:
    value = issue_code(runtime, rc, **code)
    data = {
        "grant_type": "authorization_code",
        "code": value,
        "redirect_uri": rc.registration["redirect_uris"][0],
        "code_verifier": PKCE_VERIFIER,
    }
    headers = {"DPoP": dpop_proof(dpop_key, htu=ISSUER + "/token")} if dpop_key is not None else None
    return authed(client, "/token", rc, data, headers)


def refresh(client: TestClient, rc: RegisteredClient, token: str, **extra: str) -> Any:
    return authed(client, "/token", rc, {"grant_type": "refresh_token", "refresh_token": token, **extra})
