"""The browser login page, its status, and the authenticators' endpoints for pending logins.

Browser routes (`/login/{id}`, `/status`, `/continue`, `/cancel`) are bound to the browser that started the login
by its cookie; the card routes (`/card`, `/card/abort`) are called by `sscard helper`, which proves itself with the
card, not with a cookie.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from authsvc import problems
from authsvc.deps import DbSession, RawBody, RuntimeDep
from authsvc.kiosk.endpoints import AbortBody, evidence_from, parse_body, refused, throttled
from authsvc.kiosk.throttle import Throttled
from authsvc.kiosk.verification import Refused
from authsvc.login import card, methods, pages, pending
from authsvc.oidc.authorize import AuthorizeError, error_redirect, respond_with_code
from authsvc.problems import Problem
from authsvc.runtime import Runtime
from authsvc.sessions import service as sessions
from card.request_signing import b64url

router = APIRouter(tags=["login"])
router.include_router(pages.static_router)

NO_STORE = {"Cache-Control": "no-store"}


def _browser_secret(runtime: Runtime, request: Request) -> str | None:
    return request.cookies.get(pending.browser_cookie(runtime.settings.issuer.startswith("https://")))


def _bound(runtime: Runtime, request: Request, login_id: str) -> pending.PendingLogin | None:
    login = pending.get(runtime.store, login_id)
    if login is None or not pending.bound_to(login, _browser_secret(runtime, request)):
        return None
    return login


def _locale(request: Request, login: pending.PendingLogin | None = None) -> str:
    override = request.query_params.get("lang")
    if override in pages.LOCALES:
        return override
    return login.request.locale if login else pages.choose_locale(accept=request.headers.get("accept-language"))


def _expired(runtime: Runtime, request: Request) -> Response:
    locale = _locale(request)
    text = pages.TEXT[locale]["msg_expired"]
    return pages.error_page(runtime.settings, locale, "login_unknown", text, status=404)


@router.get("/login/{login_id}")
def login_page(login_id: str, request: Request, runtime: RuntimeDep) -> Response:
    login = _bound(runtime, request, login_id)
    if login is None:
        return _expired(runtime, request)
    locale = _locale(request, login)
    text = pages.TEXT[locale]
    wanted = login.request
    messages = {key[4:]: value for key, value in text.items() if key.startswith("msg_")}
    missing = pending.status(runtime.store, login).get("missing", [])
    return pages.render(
        runtime.settings,
        "login.html",
        locale,
        login_id=login_id,
        helper_url=runtime.settings.helper_url,
        portal=wanted.client_name,
        acr=wanted.acr,
        step_up=wanted.step_up,
        missing=missing,
        offered=methods.offered(runtime, pending.proven(runtime.store, login), wanted.acr),
        messages=messages,
        switch_url=f"/login/{login_id}?lang={pages.LOCALES[1 - pages.LOCALES.index(locale)]}",
    )


@router.get("/login/{login_id}/status")
def login_status(login_id: str, request: Request, runtime: RuntimeDep) -> JSONResponse:
    login = _bound(runtime, request, login_id)
    if login is None:
        raise Problem(404, "login_unknown", "no such login is pending in this browser (expired or finished)")
    return JSONResponse(methods.status(runtime, login), headers=NO_STORE)


@router.get("/login/{login_id}/continue")
def login_continue(login_id: str, request: Request, runtime: RuntimeDep, db: DbSession) -> Response:
    finished = pending.finish(runtime.store, login_id, _browser_secret(runtime, request))
    if finished is None:
        return _expired(runtime, request)
    login, auth, _method = finished
    spec = sessions.cookie_spec(runtime.settings)
    session = sessions.current(db, runtime, request.cookies.get(spec.name))
    carried = login.request.session_sid
    if carried is not None and (session is None or session.sid != carried):
        # A step-up whose session ended (logout, another person) meanwhile: the carried factors no longer count.
        return _expired(runtime, request)
    if session is not None and session.subject == auth.subject:
        cookie = sessions.reauthenticated(db, runtime, session, auth)  # a new cookie: no fixation across a login
    else:
        if session is not None:  # another person signs in on this browser: the previous one is signed out
            sessions.end(db, runtime, session, why="replaced")  # first: it plans before it writes
        session, cookie = sessions.start(db, runtime, auth)
    response = respond_with_code(db, runtime, session, login.request, silent=False)
    response.set_cookie(
        spec.name,
        cookie,
        max_age=spec.max_age,
        path=spec.path,
        secure=spec.secure,
        httponly=spec.httponly,
        samesite=spec.samesite,
    )
    # The login cookie stays (it expires by itself): other tabs may have logins pending under the same secret.
    return response


@router.get("/login/{login_id}/cancel")
def login_cancel(login_id: str, request: Request, runtime: RuntimeDep) -> Response:
    login = _bound(runtime, request, login_id)
    if login is None or not pending.cancel(runtime.store, login_id):
        return _expired(runtime, request)
    exc = AuthorizeError("access_denied", "the citizen cancelled the sign-in")
    return error_redirect(runtime, login.request.redirect_uri, exc, login.request.state)


# -- the card, through sscard helper -----------------------------------------------------------------------


@router.get("/login/{login_id}/card")
def card_challenge(login_id: str, runtime: RuntimeDep) -> JSONResponse:
    login = pending.get(runtime.store, login_id)
    if login is None:
        raise Problem(404, "login_unknown", "no such login is pending (expired or finished)")
    challenge = card.new_challenge(runtime, login)
    return JSONResponse(
        {
            "challenge": b64url(challenge),
            "origin": card.login_origin(runtime),
            "portal": login.request.client_name,
            "acr": login.request.acr,
            "expires_in": min(runtime.settings.challenge_ttl, login.seconds_left()),
        },
        headers=NO_STORE,
    )


@router.post("/login/{login_id}/card")
def card_complete(login_id: str, runtime: RuntimeDep, db: DbSession, body: RawBody) -> Response:
    evidence = evidence_from(body)
    # Refusals are returned, not raised, so that the unit of work commits their audit events.
    try:
        progress = card.complete(runtime, db, login_id, evidence)
    except Refused as exc:
        return problems.response(refused(exc))
    except Throttled as exc:
        return problems.response(throttled(exc))
    auth = progress.auth
    answer = {"status": "done" if progress.done else "partial", "acr": auth.acr, "amr": auth.amr}
    if not progress.done:
        login = pending.get(runtime.store, login_id)
        answer["missing"] = [] if login is None else methods.offered(runtime, auth.amr, login.request.acr)
    return JSONResponse(answer, headers=NO_STORE)


@router.post("/login/{login_id}/card/abort", status_code=204)
def card_abort(login_id: str, runtime: RuntimeDep, db: DbSession, body: RawBody) -> Response:
    parsed = parse_body(AbortBody, body)
    try:
        card.abort(runtime, db, login_id, reason=parsed.reason, tries_left=parsed.tries_left)
    except Refused as exc:
        return problems.response(refused(exc))
    return Response(status_code=204)
