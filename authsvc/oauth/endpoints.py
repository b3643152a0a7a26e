"""OAuth endpoints: /par, /token, /introspect, /revoke (thin routes over the per-RFC modules).

The routes read the request themselves instead of through FastAPI dependencies: /token and /introspect are the
service's hottest routes, and every refusal must be an RFC 6749 §5.2 body, not a problem+json one. Work that needs
the database or the network runs in the thread pool (`runs_inline` in token_endpoint and introspection decides per
request); the rest stays on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar
from fastapi import APIRouter, Request
from starlette.responses import Response

from authsvc.deps import get_body
from authsvc.oauth import client_auth, forms, introspection, par, revocation, token_endpoint
from authsvc.oauth import dpop as dpop_proofs
from authsvc.oauth.errors import NO_STORE, OAuthError, invalid_request, json_response, response
from authsvc.oidc.discovery import INTROSPECT, PAR, REVOKE, TOKEN
from authsvc.problems import Problem
from authsvc.runtime import Runtime

router = APIRouter(tags=["oauth"])


async def _read(request: Request) -> tuple[Runtime, dict[str, str], str | None]:
    try:
        body = await get_body(request)
    except Problem as exc:
        raise invalid_request(exc.detail) from None
    form = forms.parse(request.headers.get("content-type"), body)
    authorization = request.headers.getlist("authorization")
    if len(authorization) > 1:
        raise invalid_request("send one Authorization header")
    return request.app.state.runtime, form, authorization[0] if authorization else None


# Threads per worker for the token routes' blocking work (database, JWKS fetches), instead of anyio's default 40:
# enough to keep the database busy while some wait on it, few enough that they do not fight over the GIL with each
# other and with the event loop, which serves the inline requests. Measured on the refresh grant (2 cores): 40
# threads (the database pool's 20 connections the real limit) did no better than 8 and had worse tail latency.
DB_THREADS = 8
_LIMITER: RunVar[CapacityLimiter] = RunVar("sscard_oauth_threads")  # per event loop, as anyio's own limiter


def _limiter() -> CapacityLimiter:
    try:
        return _LIMITER.get()
    except LookupError:
        limiter = CapacityLimiter(DB_THREADS)
        _LIMITER.set(limiter)
        return limiter


async def _in_thread(func: Callable[..., Any], *args: Any) -> Any:
    return await anyio.to_thread.run_sync(func, *args, limiter=_limiter())


async def _run(inline: bool, func: Callable[..., Any], *args: Any) -> Any:
    return func(*args) if inline else await _in_thread(func, *args)


@router.post(TOKEN)
async def token(request: Request) -> Response:
    try:
        runtime, form, authorization = await _read(request)
        dpop = request.headers.getlist("dpop")
        inline = token_endpoint.runs_inline(runtime, form, authorization=authorization, dpop=dpop)
        body, headers = await _run(
            inline, lambda: token_endpoint.handle(runtime, form, authorization=authorization, dpop=dpop)
        )
        return json_response(body, headers=headers)
    except OAuthError as exc:
        return response(exc)


def _par(runtime: Runtime, form: dict[str, str], authorization: str | None, dpop: list[str]) -> tuple[str, int]:
    url = runtime.settings.issuer + PAR
    verifier = dpop_proofs.for_runtime(runtime)
    try:
        proof = verifier.verify(dpop, method="POST", url=url)
    except dpop_proofs.DPoPError as exc:
        raise token_endpoint.dpop_error(exc, verifier) from None
    client = client_auth.authenticate(runtime, authorization=authorization, form=form, endpoint=url)
    ttl = runtime.settings.par_ttl
    request_uri = par.push(runtime.store, client, form, ttl=ttl, dpop_jkt=proof.jkt if proof else None)
    return request_uri, ttl


@router.post(PAR)
async def pushed_authorization_request(request: Request) -> Response:
    try:
        runtime, form, authorization = await _read(request)
        request_uri, ttl = await _in_thread(_par, runtime, form, authorization, request.headers.getlist("dpop"))
        return json_response({"request_uri": request_uri, "expires_in": ttl}, 201)
    except OAuthError as exc:
        return response(exc)


@router.post(INTROSPECT)
async def introspect(request: Request) -> Response:
    try:
        runtime, form, authorization = await _read(request)
        url = runtime.settings.issuer + INTROSPECT

        def work() -> dict[str, Any]:
            caller = client_auth.authenticate(runtime, authorization=authorization, form=form, endpoint=url)
            return introspection.introspect(runtime, introspection.token_of(caller, form))

        inline = introspection.runs_inline(runtime, form, authorization=authorization)
        return json_response(await _run(inline, work))
    except OAuthError as exc:
        return response(exc)


@router.post(REVOKE)
async def revoke(request: Request) -> Response:
    try:
        runtime, form, authorization = await _read(request)
        url = runtime.settings.issuer + REVOKE

        def work() -> None:
            # RFC 7009 §2.1: a public client (the e-card app) names itself to revoke its own tokens at sign-out.
            caller = client_auth.authenticate(
                runtime, authorization=authorization, form=form, endpoint=url, public=True
            )
            revocation.revoke(runtime, caller, forms.required(form, "token"))

        await _in_thread(work)
        return Response(status_code=200, headers=NO_STORE)
    except OAuthError as exc:
        return response(exc)
