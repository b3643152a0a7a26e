"""Helpers for the browser-side SSO tests: authorization requests, the card through the helper's endpoints."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi.testclient import TestClient

from authsvc.oauth import pkce
from card import cryptogram
from card.request_signing import b64url_decode
from tests.fixtures.oidc import RegisteredClient
from tests.fixtures.service import PIN
from tests.fixtures.softcard import evidence, open_card

ISSUER = "http://testserver"
WEB_CONTEXT = cryptogram.web_context(cryptogram.web_origin(ISSUER))


@dataclass
class Request:
    params: dict[str, str]
    verifier: str


def request_for(client: RegisteredClient, **overrides: str | None) -> Request:
    verifier = secrets.token_urlsafe(48)
    params: dict[str, Any] = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": client.registration["redirect_uris"][0],
        "scope": "openid",
        "state": secrets.token_urlsafe(8),
        "nonce": secrets.token_urlsafe(8),
        "code_challenge": pkce.challenge_for(verifier),
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return Request({k: v for k, v in params.items() if v is not None}, verifier)


def authorize(browser: TestClient, request: Request | dict[str, str]):  # type: ignore[no-untyped-def]
    params = request.params if isinstance(request, Request) else request
    return browser.get("/authorize", params=params, follow_redirects=False)


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def login_id_of(response) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == 303, response.text
    path = urlsplit(response.headers["location"]).path
    assert path.startswith("/login/"), path
    return path.removeprefix("/login/")


def card_body(
    helper: TestClient, login_id: str, card_path: Path, *, context: bytes = WEB_CONTEXT, pin: str | None = PIN
) -> dict[str, str]:
    """What `sscard helper` posts: it fetches the challenge, the card answers it."""
    answer = helper.get(f"/login/{login_id}/card")
    assert answer.status_code == 200, answer.text
    challenge = b64url_decode(answer.json()["challenge"])
    return evidence(open_card(card_path), challenge, "", pin, context=context)


def sign_with_card(helper: TestClient, login_id: str, card_path: Path, **kwargs: Any):  # type: ignore[no-untyped-def]
    return helper.post(f"/login/{login_id}/card", json=card_body(helper, login_id, card_path, **kwargs))
