"""A small relying party for the demo and the browser test: a portal that signs citizens in with the provider.

It does what a portal developer would with plain httpx + pyjwt: discovery, authorization code with PKCE (S256),
`state`, `nonce` and RFC 9207 `iss` checks, the code exchanged with client_secret_basic, the ID token verified
against the provider's JWKS, RP-initiated logout, and back-channel logout tokens verified and honoured (every local
session with the token's `sid` ends).
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import jwt
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from authsvc.tokens.assurance import HIGH, LEVELS

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
MAX_PENDING = 1000


@dataclass
class PortalConfig:
    name: str
    base_url: str  # where this portal is served, e.g. http://127.0.0.1:8001
    issuer: str
    client_id: str
    client_secret: str
    scope: str = "openid"


@dataclass
class PortalState:
    pending: dict[str, dict[str, str]] = field(default_factory=dict)  # cookie → state, nonce, verifier
    signed_in: dict[str, dict[str, Any]] = field(default_factory=dict)  # cookie → ID token claims + raw token
    logouts: list[dict[str, Any]] = field(default_factory=list)  # verified back-channel logout tokens' claims
    lock: threading.Lock = field(default_factory=threading.Lock)


class Provider:
    """Discovery and keys, fetched once (a portal would cache them the same way)."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self._meta: dict[str, Any] | None = None
        self._jwks: jwt.PyJWKClient | None = None

    @property
    def meta(self) -> dict[str, Any]:
        if self._meta is None:
            meta = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=10).json()
            if meta["issuer"] != self.issuer:
                raise ValueError("discovery names another issuer")
            self._meta = meta
        return self._meta

    def verify(self, token: str, audience: str, require: list[str]) -> dict[str, Any]:
        """The claims of a token the provider signed for `audience`; raises jwt.PyJWTError."""
        if self._jwks is None:
            self._jwks = jwt.PyJWKClient(self.meta["jwks_uri"])
        key = self._jwks.get_signing_key_from_jwt(token).key
        return jwt.decode(
            token, key, algorithms=["ES256"], audience=audience, issuer=self.issuer, options={"require": require}
        )


def _page(config: PortalConfig, body: str) -> HTMLResponse:
    title = html.escape(config.name)
    return HTMLResponse(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>'
        f"<body><header><h1>{title}</h1></header><main>{body}</main></body></html>",
        headers={"Cache-Control": "no-store"},
    )


def create_portal(config: PortalConfig) -> FastAPI:
    app = FastAPI(title=config.name, docs_url=None, redoc_url=None)
    state = PortalState()
    provider = Provider(config.issuer)
    app.state.portal = state
    redirect_uri = f"{config.base_url}/callback"
    # Cookies ignore ports: portals side by side on 127.0.0.1 each need their own cookie name.
    cookie_name = "portal_" + hashlib.sha256(config.base_url.encode()).hexdigest()[:12]

    @app.get("/")
    def home(request: Request) -> Response:
        who = state.signed_in.get(request.cookies.get(cookie_name, ""))
        if who is None:
            return _page(
                config,
                '<p>Not signed in.</p><p><a id="sign-in" href="/login">Sign in</a> · '
                f'<a id="sign-in-high" href="/login?{urlencode({"acr": HIGH})}">Sign in for a sensitive '
                "operation</a></p>",
            )
        # amr and sid shown too: the demo (authsvc/demo_browser.py) reports them, and a shared sid is what SSO means.
        amr, sid = " ".join(who.get("amr", [])), who.get("sid", "")
        return _page(
            config,
            f'<p id="who">Signed in as <code id="sub">{html.escape(who["sub"])}</code> at <code id="acr">'
            f'{html.escape(who["acr"])}</code> with <code id="amr">{html.escape(amr)}</code>, session <code id="sid">'
            f'{html.escape(sid)}</code></p><p><a id="step-up" href="/login?{urlencode({"acr": HIGH})}">Raise to the '
            'highest level (step-up)</a> · <a id="sign-out" href="/logout">Sign out</a></p>',
        )

    @app.get("/login")
    def login(acr: str | None = None) -> Response:
        # The level this page needs (a portal asks for more before a sensitive operation: step-up).
        acr_values = {"acr_values": acr} if acr in LEVELS else {}
        cookie, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        flow = {"state": secrets.token_urlsafe(16), "nonce": secrets.token_urlsafe(16), "verifier": verifier}
        with state.lock:
            if len(state.pending) >= MAX_PENDING:  # abandoned sign-ins must not grow the map without bound
                state.pending.pop(next(iter(state.pending)))
            state.pending[cookie] = flow
        query = urlencode(
            {
                "response_type": "code",
                "client_id": config.client_id,
                "redirect_uri": redirect_uri,
                "scope": config.scope,
                "state": flow["state"],
                "nonce": flow["nonce"],
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                **acr_values,
            }
        )
        response = RedirectResponse(f"{provider.meta['authorization_endpoint']}?{query}", 303)
        response.set_cookie(cookie_name, cookie, httponly=True, samesite="lax")
        return response

    @app.get("/callback")
    def callback(request: Request) -> Response:
        cookie = request.cookies.get(cookie_name, "")
        with state.lock:
            flow = state.pending.pop(cookie, None)
        params = request.query_params
        if flow is None or not secrets.compare_digest(params.get("state", ""), flow["state"]):
            return _page(config, "<p>Sign-in failed: state does not match.</p>")
        if params.get("iss") != config.issuer:  # RFC 9207: the answer comes from the provider we asked
            return _page(config, "<p>Sign-in failed: wrong issuer.</p>")
        if "error" in params:
            return _page(config, f"<p>Sign-in failed: {html.escape(params['error'])}</p>")
        answer = httpx.post(
            provider.meta["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": params.get("code", ""),
                "redirect_uri": redirect_uri,
                "code_verifier": flow["verifier"],
            },
            auth=(config.client_id, config.client_secret),
            timeout=10,
        )
        if answer.status_code != 200:
            return _page(config, f"<p>Sign-in failed: token endpoint answered {answer.status_code}.</p>")
        try:
            id_token = answer.json()["id_token"]
            claims = provider.verify(id_token, config.client_id, ["exp", "iat", "sub", "nonce"])
        except (ValueError, KeyError, TypeError, jwt.PyJWTError):
            return _page(config, "<p>Sign-in failed: the ID token was refused.</p>")
        if not secrets.compare_digest(claims["nonce"], flow["nonce"]):
            return _page(config, "<p>Sign-in failed: nonce does not match.</p>")
        with state.lock:
            state.signed_in[cookie] = {**claims, "id_token": id_token}
        return RedirectResponse("/", 303)

    @app.get("/logout")
    def logout(request: Request) -> Response:
        with state.lock:
            who = state.signed_in.pop(request.cookies.get(cookie_name, ""), None)
        if who is None:
            return RedirectResponse("/", 303)
        query = urlencode(
            {"id_token_hint": who["id_token"], "post_logout_redirect_uri": f"{config.base_url}/", "state": "bye"}
        )
        return RedirectResponse(f"{provider.meta['end_session_endpoint']}?{query}", 303)

    def honour_logout(token: str) -> Response:
        try:
            if jwt.get_unverified_header(token).get("typ") != "logout+jwt":
                raise jwt.InvalidTokenError("not a logout token")
            claims = provider.verify(token, config.client_id, ["iat", "exp", "jti", "events"])
            named = claims.get("sid") or claims.get("sub")
            if LOGOUT_EVENT not in claims["events"] or "nonce" in claims or not named:
                raise jwt.InvalidTokenError("not a back-channel logout token")
        except (jwt.PyJWTError, KeyError, TypeError):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        with state.lock:
            state.logouts.append(claims)
            for cookie in [c for c, who in state.signed_in.items() if who.get("sid") == claims.get("sid")]:
                del state.signed_in[cookie]
        return Response(status_code=200, headers={"Cache-Control": "no-store"})

    @app.post("/backchannel")
    async def backchannel(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("ascii", "replace"))
        # Verifying may fetch the provider's keys: off the event loop.
        return await run_in_threadpool(honour_logout, (form.get("logout_token") or [""])[0])

    @app.get("/events")
    def events() -> JSONResponse:
        with state.lock:
            return JSONResponse({"logouts": [c.get("sid") for c in state.logouts], "sessions": len(state.signed_in)})

    return app


def serve_in_thread(app: FastAPI, port: int, *, name: str = "portal") -> uvicorn.Server:
    """`app` on 127.0.0.1:`port` in a daemon thread (a demo portal or a sandbox); returns once it listens."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name=f"{name}-{port}")
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the demo {name} on port {port} did not start")
        time.sleep(0.02)
    return server
