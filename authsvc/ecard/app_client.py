"""The e-card app's OAuth registration, in one place for the demo, the tests and operators' scripts: an RFC 8252
public native client (auth method none, PKCE), a loopback redirect on any port, scopes openid and ecard, every
level (the highest first: enrolment asks for it)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from authsvc.clients import service as clients
from authsvc.clients.models import AuthMethod, OAuthClient
from authsvc.oauth import scopes
from authsvc.tokens import assurance
from keys.hmac_keys import HmacKeys

NAME = "电子社保卡 E-card app"
REDIRECT_URI = "http://127.0.0.1/callback"


def spec(name: str = NAME) -> clients.ClientSpec:
    return clients.ClientSpec(
        name=name,
        auth_method=AuthMethod.NONE,
        redirect_uris=[REDIRECT_URI],
        scopes=[scopes.OPENID, scopes.ECARD],
        acr_values=[assurance.HIGH, assurance.SUBSTANTIAL, assurance.LOW],
    )


def register(session: Session, hmac_keys: HmacKeys, *, actor: str) -> OAuthClient:
    client, _ = clients.register(session, hmac_keys, spec(), actor=actor)
    return client
