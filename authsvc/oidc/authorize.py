"""The authorization endpoint (RFC 6749 §4.1, OpenID Connect Core §3.1.2, PAR RFC 9126, FAPI 2.0, RFC 9207).

Until the client and its redirect URI are trusted (known, active client; redirect URI registered, compared as exact
strings) every refusal is an HTML error page: redirecting an error to an unchecked URI would make the endpoint an open
redirector. After that, refusals go back to the client with `error`, `error_description`, `state` and `iss`.
"""

from __future__ import annotations

import hmac
import re
import time
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from authsvc.audit import service as audit
from authsvc.clients import service as clients
from authsvc.clients.models import AuthMethod, GrantType, OAuthClient
from authsvc.deps import DbSession, RawBody, RuntimeDep
from authsvc.login import pending
from authsvc.login.pages import choose_locale, error_page
from authsvc.oauth import codes, forms, pkce
from authsvc.oauth import scopes as known_scopes
from authsvc.oauth.errors import OAuthError
from authsvc.oidc import id_token_hint
from authsvc.oidc.discovery import AUTHORIZE
from authsvc.oidc.subjects import subject_for
from authsvc.runtime import Runtime
from authsvc.sessions import service as sessions
from authsvc.sessions.models import SsoSession
from authsvc.tokens.assurance import LEVELS, satisfies

router = APIRouter(tags=["oidc"])

PROMPTS = {"none", "login"}
_JKT = re.compile(r"[A-Za-z0-9_-]{43}")
_LIMITS = {"state": 1024, "nonce": 512, "ui_locales": 128, "login_hint": 256, "acr_values": 512, "scope": 512}


class AuthorizeError(Exception):
    """A refusal sent back to the (trusted) redirect URI."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class Checked:
    request: pending.LoginRequest
    prompt: frozenset[str]
    max_age: int | None


def redirect_to_client(redirect_uri: str, params: dict[str, str | None]) -> RedirectResponse:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    separator = "" if not query else "&" if "?" in redirect_uri else "?"
    return RedirectResponse(redirect_uri + separator + query, 303, headers={"Cache-Control": "no-store"})


def error_redirect(runtime: Runtime, redirect_uri: str, exc: AuthorizeError, state: str | None) -> RedirectResponse:
    return redirect_to_client(
        redirect_uri,
        {"error": exc.error, "error_description": exc.description, "state": state, "iss": runtime.settings.issuer},
    )


def respond_with_code(
    db: Session, runtime: Runtime, session: SsoSession, request: pending.LoginRequest, *, silent: bool
) -> RedirectResponse:
    """Issue the code for `request` under `session`, record the portal on the session, and send the browser back."""
    code = codes.issue(
        runtime.store,
        codes.AuthorizationCode(
            client_id=request.client_id,
            redirect_uri=request.redirect_uri,
            scope=request.scope,
            code_challenge=request.code_challenge,
            subject=session.subject,
            sid=session.sid,
            acr=session.acr,
            amr=list(session.amr),
            auth_time=int(session.auth_time.timestamp()),
            nonce=request.nonce,
            dpop_jkt=request.dpop_jkt,
        ),
        runtime.settings.code_ttl,
    )
    sessions.signed_in(db, session, request.client_id)
    audit.record(
        db,
        event="oidc_code_issued",
        outcome="success",
        subject=session.subject,
        detail={"client_id": request.client_id, "acr": session.acr, "silent": silent},
    )
    return redirect_to_client(
        request.redirect_uri, {"code": code, "state": request.state, "iss": runtime.settings.issuer}
    )


def _printable_client_id(value: str) -> bool:
    # Checked before the database sees it: PostgreSQL refuses a NUL in a text parameter (an error, not a miss).
    return 1 <= len(value) <= 64 and value.isascii() and value.isprintable()


def _safe_name(name: str) -> str:
    # RFC 6749 §4.1.2.1: error_description is limited to printable ASCII without '"' and '\\'.
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "?" for c in name[:40])


def _single(value: str | None, name: str) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > _LIMITS.get(name, 256) or not value.isprintable():
        raise AuthorizeError("invalid_request", f"{name} is too long or holds control characters")
    return value


def check(client: OAuthClient, params: dict[str, str], *, pushed: bool, locale: str) -> Checked:
    """The request's parameters against the client's registration; AuthorizeError on the first violation."""
    if "request" in params:
        raise AuthorizeError("request_not_supported", "request objects are not supported; use PAR")
    if client.fapi and not pushed:
        raise AuthorizeError("invalid_request", "this client must push its authorization requests (PAR)")
    if GrantType.AUTHORIZATION_CODE not in client.grant_types:
        raise AuthorizeError("unauthorized_client", "this client is not registered for the authorization code grant")
    response_type = params.get("response_type")
    if not response_type:
        raise AuthorizeError("invalid_request", "response_type is required")
    if response_type != "code":
        raise AuthorizeError("unsupported_response_type", "only response_type=code is supported")
    if params.get("response_mode") not in (None, "", "query"):
        raise AuthorizeError("invalid_request", "only response_mode=query is supported")
    scope = known_scopes.parse(_single(params.get("scope"), "scope"))
    if not scope:
        raise AuthorizeError("invalid_scope", "scope is required")
    if not set(scope) <= set(client.scopes):
        raise AuthorizeError("invalid_scope", "the scope asks for more than the client is registered for")
    challenge = params.get("code_challenge")
    if not challenge:
        raise AuthorizeError("invalid_request", "PKCE is required: code_challenge is missing")
    if params.get("code_challenge_method") != pkce.METHOD:
        raise AuthorizeError("invalid_request", "PKCE code_challenge_method must be S256")
    if not pkce.valid_challenge(challenge):
        raise AuthorizeError("invalid_request", "code_challenge must be the base64url SHA-256 of the verifier")
    requested = (_single(params.get("acr_values"), "acr_values") or "").split()
    if requested:
        if not set(requested) <= set(client.acr_values):
            raise AuthorizeError("invalid_request", "acr_values names a level the client is not registered for")
        acr = min(requested, key=LEVELS.index)  # the lowest requested level is the one required
    else:
        acr = client.acr_values[0]
    prompt = frozenset((_single(params.get("prompt"), "prompt") or "").split())
    if not prompt <= PROMPTS:
        raise AuthorizeError("invalid_request", "prompt supports none and login only")
    if "none" in prompt and len(prompt) > 1:
        raise AuthorizeError("invalid_request", "prompt=none cannot be combined with other values")
    max_age_raw = params.get("max_age")
    max_age = None
    if max_age_raw not in (None, ""):
        # ASCII digits only: "²" is a digit to str.isdigit() but not to int().
        if not (max_age_raw.isascii() and max_age_raw.isdigit()) or len(max_age_raw) > 9:
            raise AuthorizeError("invalid_request", "max_age must be a non-negative number of seconds")
        max_age = int(max_age_raw)
    dpop_jkt = params.get("dpop_jkt") or None
    if dpop_jkt is not None and not _JKT.fullmatch(dpop_jkt):
        raise AuthorizeError("invalid_request", "dpop_jkt must be a base64url SHA-256 JWK thumbprint")
    _single(params.get("login_hint"), "login_hint")  # accepted, not used: the card says who signs in
    request = pending.LoginRequest(
        client_id=client.client_id,
        client_name=client.name,
        redirect_uri=params["redirect_uri"],
        scope=scope,
        code_challenge=challenge,
        acr=acr,
        locale=locale,
        state=_single(params.get("state"), "state"),
        nonce=_single(params.get("nonce"), "nonce"),
        dpop_jkt=dpop_jkt,
    )
    return Checked(request, prompt, max_age)


def _take_pushed(runtime: Runtime, request_uri: str, client_id: str) -> dict[str, str] | None:
    from authsvc.oauth.par import take_request

    return take_request(runtime.store, request_uri, client_id)


@router.post(AUTHORIZE)
def authorize_by_post(request: Request, runtime: RuntimeDep, body: RawBody) -> Response:
    """OpenID Connect Core §3.1.2.1: the request may come form-encoded in a POST. A portal's POST is cross-site, so
    the SameSite=Lax session cookie is not sent with it; the same request as a top-level GET carries it."""
    try:
        params = forms.parse(request.headers.get("content-type"), body)
    except OAuthError as exc:
        locale = choose_locale(ui_locales=None, accept=request.headers.get("accept-language"))
        return error_page(runtime.settings, locale, exc.error, exc.description)
    return RedirectResponse(f"{AUTHORIZE}?{urlencode(params)}", 303, headers={"Cache-Control": "no-store"})


@router.get(AUTHORIZE)
def authorize(request: Request, runtime: RuntimeDep, db: DbSession) -> Response:
    s = runtime.settings
    query = request.query_params
    locale = choose_locale(ui_locales=query.get("ui_locales"), accept=request.headers.get("accept-language"))
    repeated = sorted({k for k in query if len(query.getlist(k)) > 1})
    client_id = query.get("client_id")
    if not client_id or "client_id" in repeated:
        return error_page(s, locale, "invalid_request", "client_id is missing or repeated")
    client = clients.get(db, client_id) if _printable_client_id(client_id) else None
    if client is None:
        return error_page(s, locale, "invalid_client", "unknown client")
    if not client.active:
        return error_page(s, locale, "invalid_client", "this client is disabled")
    request_uri = query.get("request_uri")
    if request_uri:
        # RFC 9126 §4: only the pushed parameters count; the query's own are ignored (but client_id).
        params = _take_pushed(runtime, request_uri, client_id)
        if params is None:
            return error_page(s, locale, "invalid_request_uri", "the request_uri is unknown, expired or used already")
        params = {**params, "client_id": client_id}
        locale = choose_locale(ui_locales=params.get("ui_locales"), accept=request.headers.get("accept-language"))
    else:
        params = {k: query[k] for k in query}
    redirect_uri = params.get("redirect_uri")
    if not redirect_uri or ("redirect_uri" in repeated and not request_uri):
        return error_page(s, locale, "invalid_request", "redirect_uri is missing or repeated")
    if not clients.redirect_uri_registered(client, redirect_uri):
        return error_page(s, locale, "invalid_request", "redirect_uri is not registered for this client")
    state = params.get("state") or None
    if state is not None and (len(state) > _LIMITS["state"] or not state.isprintable()):
        state = None  # not echoed: it could not be a value the client sent in good faith
    try:
        if repeated and not request_uri:
            raise AuthorizeError("invalid_request", f"parameter '{_safe_name(repeated[0])}' is repeated")
        checked = check(client, params, pushed=bool(request_uri), locale=locale)
    except AuthorizeError as exc:
        return error_redirect(runtime, redirect_uri, exc, state)
    expected: str | None = None
    if "id_token_hint" in params:
        hint = id_token_hint.read(runtime, params["id_token_hint"])
        if hint is None or client.client_id not in id_token_hint.audiences(hint):
            exc = AuthorizeError("invalid_request", "id_token_hint is not an ID token this provider issued to you")
            return error_redirect(runtime, redirect_uri, exc, state)
        expected = str(hint["sub"])
    return _proceed(request, runtime, db, checked, client, expected)


def _proceed(
    request: Request, runtime: Runtime, db: Session, checked: Checked, client: OAuthClient, expected: str | None
) -> Response:
    """`expected`: the subject (as this client knows it) of the portal's id_token_hint. A session of somebody else
    is not reused for it (OpenID Connect Core §3.1.2.1): `prompt=none` answers login_required."""
    wanted = checked.request
    session = sessions.current(db, runtime, request.cookies.get(sessions.cookie_spec(runtime.settings).name))
    if session is not None and expected is not None:
        known_as = subject_for(client, session.subject, runtime.hmac_keys)
        if not hmac.compare_digest(known_as.encode(), expected.encode()):
            session = None
    recent = session is not None and (
        checked.max_age is None or int(time.time()) - int(session.auth_time.timestamp()) <= checked.max_age
    )
    # A public client (an RFC 8252 native app) cannot prove it is the app it names: any program on the device may use
    # its client_id with a loopback redirect. A session is never made into its code, or into a step-up, without the
    # citizen signing in at the login page (RFC 8252 §8.6); the e-card app's token would enrol a key otherwise.
    native = client.auth_method == AuthMethod.NONE
    reusable = session is not None and recent and "login" not in checked.prompt and not native
    if reusable and session is not None and satisfies(session.acr, wanted.acr):
        return respond_with_code(db, runtime, session, wanted, silent=True)
    if "none" in checked.prompt:
        exc = AuthorizeError("login_required", "the citizen must sign in (prompt=none)")
        return error_redirect(runtime, wanted.redirect_uri, exc, wanted.state)
    if reusable and session is not None:
        # Only the level is short: a step-up for the same person, asking only for the missing factors.
        wanted = replace(
            wanted, subject=session.subject, amr=list(session.amr), session_acr=session.acr, session_sid=session.sid
        )
    s = runtime.settings
    secure = s.issuer.startswith("https://")
    name = pending.browser_cookie(secure)
    browser = request.cookies.get(name)
    if not browser or not 32 <= len(browser) <= 64:
        browser = pending.new_browser_secret()
    login = pending.create(runtime.store, wanted, browser, s.pending_login_ttl)
    response = RedirectResponse(f"/login/{login.login_id}", 303, headers={"Cache-Control": "no-store"})
    # Path "/": the browser must send it back here too, so that a second login started in another tab is bound to
    # the same secret rather than replacing it (which would orphan the first tab's login).
    response.set_cookie(
        name,
        browser,
        max_age=s.pending_login_ttl,
        path="/",
        secure=secure,
        httponly=True,
        samesite="lax",
    )
    return response
