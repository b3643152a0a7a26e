"""The userinfo endpoint (OpenID Connect Core §5.3): claims by scope.

`openid` gives `sub` (as the client knows it: pairwise where it is); `profile` gives `name`, `gender` and
`birthdate`; `ssn` gives `social_security_number`, only to a client registered for it and only when the login
reached the client's registered minimum level (`ssn_min_acr`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from authsvc.deps import DbSession, RuntimeDep
from authsvc.oauth import grants, resource
from authsvc.oauth import scopes as known_scopes
from authsvc.oauth.client_auth import clients
from authsvc.oauth.errors import NO_STORE
from authsvc.oidc.discovery import USERINFO
from authsvc.registry.models import Cardholder
from authsvc.tokens.assurance import satisfies

router = APIRouter(tags=["oidc"])
GENDER = {"1": "male", "2": "female"}  # GB/T 2261.1; "0" unknown and "9" unstated are not claimed


def ssn_released(client_scopes: list[str], ssn_min_acr: str | None, token: resource.AccessToken) -> bool:
    return (
        known_scopes.SSN in token.scopes
        and known_scopes.SSN in client_scopes
        and ssn_min_acr is not None
        and token.acr is not None
        and satisfies(token.acr, ssn_min_acr)
    )


@router.api_route(USERINFO, methods=["GET", "POST"])
def userinfo(request: Request, runtime: RuntimeDep, db: DbSession) -> JSONResponse:
    token = resource.from_request(runtime, request)
    resource.require_scope(token, known_scopes.OPENID)
    grant = grants.get(db, token.grant_id) if token.grant_id else None
    holder = None
    if grant is not None and grant.revoked_at is None:
        holder = db.scalar(select(Cardholder).where(Cardholder.subject == grant.subject))
    client = clients(runtime).get(token.client_id)
    if holder is None or client is None:
        raise resource.TokenError(401, "invalid_token", "the access token does not stand for a citizen")
    claims: dict[str, Any] = {"sub": token.subject}
    if known_scopes.PROFILE in token.scopes:
        claims["name"] = holder.name
        if holder.sex in GENDER:
            claims["gender"] = GENDER[holder.sex]
        claims["birthdate"] = holder.birth_date.isoformat()
    if ssn_released(client.scopes, client.ssn_min_acr, token):
        claims["social_security_number"] = holder.ssn
    return JSONResponse(claims, headers=NO_STORE)
