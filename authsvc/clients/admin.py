"""Admin API for client registration (automation): an access token with scope sscard:admin, issued to a client
acting for itself (client credentials). Refusals are problem+json with RFC 7591 reasons for bad metadata."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from authsvc.clients import service
from authsvc.clients.models import ClientStatus
from authsvc.deps import DbSession, RawBody, RuntimeDep
from authsvc.oauth import resource
from authsvc.oauth import scopes as known_scopes
from authsvc.oauth.client_auth import clients
from authsvc.problems import Problem

router = APIRouter(prefix="/admin/clients", tags=["admin"])


def admin_token(request: Request, runtime: RuntimeDep) -> resource.AccessToken:
    token = resource.from_request(runtime, request)
    resource.require_scope(token, known_scopes.ADMIN)
    if token.grant_id is not None:  # a citizen's login never administers clients
        raise resource.TokenError(403, "insufficient_scope", "administration needs a client-credentials token")
    return token


AdminToken = Annotated[resource.AccessToken, Depends(admin_token)]


def _problem(exc: service.ClientError) -> Problem:
    return Problem(404 if exc.reason == "client_unknown" else 400, exc.reason, exc.detail)


def _actor(token: resource.AccessToken) -> str:
    return f"admin-api:{token.client_id}"


def _json(body: dict[str, Any] | list[dict[str, Any]], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


@router.post("")
def register(token: AdminToken, runtime: RuntimeDep, db: DbSession, body: RawBody) -> JSONResponse:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Problem(400, "invalid_client_metadata", "the body must be a JSON object") from None
    try:
        client, secret = service.register(db, runtime.hmac_keys, service.spec_from_json(doc), actor=_actor(token))
    except service.ClientError as exc:
        raise _problem(exc) from None
    answer = service.describe(client)
    answer["client_id_issued_at"] = int(client.created_at.timestamp())
    if secret is not None:
        answer["client_secret"] = secret  # shown once; only its keyed digest is stored
        answer["client_secret_expires_at"] = 0
    return _json(answer, 201)


@router.get("")
def list_clients(_token: AdminToken, db: DbSession) -> JSONResponse:
    return _json([service.describe(c) for c in service.list_all(db)])


@router.get("/{client_id}")
def show(client_id: str, _token: AdminToken, db: DbSession) -> JSONResponse:
    client = service.get(db, client_id)
    if client is None:
        raise Problem(404, "client_unknown", f"no client {client_id!r}")
    return _json(service.describe(client))


@router.post("/{client_id}/disable")
def disable(client_id: str, token: AdminToken, runtime: RuntimeDep, db: DbSession) -> JSONResponse:
    try:
        client = service.set_status(db, client_id, ClientStatus.DISABLED, actor=_actor(token))
    except service.ClientError as exc:
        raise _problem(exc) from None
    clients(runtime).forget(client_id)  # this worker at once; the others within key_cache_seconds
    return _json(service.describe(client))


@router.post("/{client_id}/secret")
def rotate_secret(client_id: str, token: AdminToken, runtime: RuntimeDep, db: DbSession) -> JSONResponse:
    try:
        secret = service.rotate_secret(db, runtime.hmac_keys, client_id, actor=_actor(token))
    except service.ClientError as exc:
        raise _problem(exc) from None
    clients(runtime).forget(client_id)
    return _json({"client_id": client_id, "client_secret": secret, "client_secret_expires_at": 0})
