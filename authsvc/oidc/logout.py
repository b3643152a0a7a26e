"""RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).

A portal sends the browser here with `id_token_hint` (checked with our keys; an expired one is accepted, since an
ID token is short-lived and the hint only names the session), `client_id`, `post_logout_redirect_uri` (registered,
exact match), `state` and `ui_locales`. With a hint for the browser's current session the session ends at once;
otherwise the citizen confirms on a form protected by a CSRF token bound to the session, so that no other site can
sign the citizen out by sending the browser here.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, BackgroundTasks, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from authsvc.clients import service as clients
from authsvc.clients.models import OAuthClient
from authsvc.deps import DbSession, RawBody, RuntimeDep
from authsvc.login import pages
from authsvc.oauth import forms
from authsvc.oauth.errors import OAuthError
from authsvc.oidc import backchannel, id_token_hint
from authsvc.oidc.authorize import redirect_to_client
from authsvc.oidc.discovery import LOGOUT
from authsvc.runtime import Runtime
from authsvc.sessions import service as sessions
from authsvc.sessions.models import SsoSession
from card.request_signing import b64url
from keys import hmac_keys

router = APIRouter(tags=["oidc"])

CARRIED = ("client_id", "post_logout_redirect_uri", "state", "ui_locales")


class LogoutRefused(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def verify_hint(runtime: Runtime, hint: str) -> dict[str, Any]:
    claims = id_token_hint.read(runtime, hint)
    if claims is None:
        raise LogoutRefused("invalid_request", "id_token_hint is not an ID token this provider issued")
    return claims


def csrf_token(runtime: Runtime, session: SsoSession) -> str:
    mac = runtime.hmac_keys.mac(hmac_keys.LOGOUT_CSRF, session.sid.encode())
    return b64url(mac)


def _client(db: Session, params: dict[str, str], hint: dict[str, Any] | None) -> OAuthClient | None:
    client_id = params.get("client_id")
    if hint is not None:
        audience = id_token_hint.audiences(hint)
        if client_id is not None and client_id not in audience:
            raise LogoutRefused("invalid_request", "client_id is not the audience of id_token_hint")
        client_id = client_id or (audience[0] if len(audience) == 1 else None)
    if client_id is None:
        return None
    # Printable ASCII before the database sees it: PostgreSQL fails on a NUL rather than finding nothing.
    client = clients.get(db, client_id) if client_id.isascii() and client_id.isprintable() else None
    if client is None or not client.active:
        raise LogoutRefused("invalid_client", "unknown or disabled client")
    return client


def _redirect_uri(params: dict[str, str], client: OAuthClient | None) -> str | None:
    uri = params.get("post_logout_redirect_uri")
    if uri is None:
        return None
    if client is None:
        raise LogoutRefused("invalid_request", "post_logout_redirect_uri needs client_id or id_token_hint")
    if uri not in client.post_logout_redirect_uris:
        raise LogoutRefused("invalid_request", "post_logout_redirect_uri is not registered for this client")
    return uri


def _params(request: Request, body: bytes) -> dict[str, str]:
    if request.method == "POST":
        try:
            return forms.parse(request.headers.get("content-type"), body)
        except OAuthError as exc:
            raise LogoutRefused(exc.error, exc.description) from None
    query = request.query_params
    if any(len(query.getlist(k)) > 1 for k in query):
        raise LogoutRefused("invalid_request", "a parameter is repeated")
    return {k: query[k] for k in query if query[k]}


def _done(runtime: Runtime, locale: str, redirect_uri: str | None, state: str | None, message: str) -> Response:
    if redirect_uri is not None:
        return redirect_to_client(redirect_uri, {"state": state})
    return pages.render(runtime.settings, "logout.html", locale, confirm=False, message=message)


def _end(
    db: Session, runtime: Runtime, session: SsoSession, tasks: BackgroundTasks, response: Response
) -> Response:
    sessions.end(db, runtime, session, why="logout")
    # After the response (and the commit): the first attempt at once; the loop retries the rest.
    tasks.add_task(backchannel.deliver_due, runtime)
    spec = sessions.cookie_spec(runtime.settings)
    response.delete_cookie(
        spec.name, path=spec.path, secure=spec.secure, httponly=spec.httponly, samesite=spec.samesite
    )
    return response


@router.api_route(LOGOUT, methods=["GET", "POST"])
def logout(request: Request, runtime: RuntimeDep, db: DbSession, body: RawBody, tasks: BackgroundTasks) -> Response:
    s = runtime.settings
    accept = request.headers.get("accept-language")
    locale = pages.choose_locale(ui_locales=request.query_params.get("ui_locales"), accept=accept)
    try:
        params = _params(request, body)
        locale = pages.choose_locale(ui_locales=params.get("ui_locales"), accept=accept)
        hint = verify_hint(runtime, params["id_token_hint"]) if "id_token_hint" in params else None
        client = _client(db, params, hint)
        redirect_uri = _redirect_uri(params, client)
    except LogoutRefused as exc:
        return pages.error_page(s, locale, exc.error, exc.description)
    state = params.get("state")
    if request.method == "POST" and "confirm" not in params:
        # A portal's form POST is cross-site, so the SameSite=Lax session cookie is not sent with it; the same
        # request as a top-level GET navigation carries it.
        return RedirectResponse(f"{LOGOUT}?{urlencode(params)}", 303, headers={"Cache-Control": "no-store"})
    session = sessions.current(db, runtime, request.cookies.get(sessions.cookie_spec(s).name))
    if "confirm" in params:
        if session is None:
            return _done(runtime, locale, redirect_uri, state, "logged_out")
        if not hmac.compare_digest(params.get("csrf", "").encode(), csrf_token(runtime, session).encode()):
            return pages.error_page(s, locale, "invalid_request", "the sign-out form has expired; please try again")
        if params["confirm"] != "yes":
            return pages.render(s, "logout.html", locale, confirm=False, message="kept")
        return _end(db, runtime, session, tasks, _done(runtime, locale, redirect_uri, state, "logged_out"))
    if session is None:
        return _done(runtime, locale, redirect_uri, state, "logged_out")
    if hint is not None and hmac.compare_digest(str(hint.get("sid", "")).encode(), session.sid.encode()):
        return _end(db, runtime, session, tasks, _done(runtime, locale, redirect_uri, state, "logged_out"))
    carried = [(name, params[name]) for name in CARRIED if name in params]
    if client is not None and "client_id" not in params:
        carried.insert(0, ("client_id", client.client_id))
    csrf = csrf_token(runtime, session)
    return pages.render(s, "logout.html", locale, confirm=True, action=LOGOUT, csrf=csrf, carried=carried)
