"""E-card routes: enrolment and the holder's list (`/v1/ecards`, bearer access token with scope `ecard`), the app's
sign-in (`/v1/ecard/sign-ins`, proven by the device key's signature), and the browser's QR code
(`/login/{id}/ecard`, bound to the browser that started the login by its cookie). Thin: parse, call, map."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from authsvc import problems
from authsvc.deps import DbSession, RawBody, RuntimeDep
from authsvc.ecard import service, signin
from authsvc.ecard.service import EcardRefused
from authsvc.kiosk.endpoints import parse_body, throttled
from authsvc.kiosk.throttle import Throttled
from authsvc.login import pages, pending
from authsvc.oauth import resource, step_up
from authsvc.oauth import scopes as known_scopes
from authsvc.oauth.models import OAuthGrant
from authsvc.problems import Problem
from authsvc.runtime import Runtime
from authsvc.tokens import assurance

router = APIRouter(tags=["ecard"])
NO_STORE = {"Cache-Control": "no-store"}
B64 = r"^[A-Za-z0-9_-]+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnrolBody(_Strict):
    public_key: dict[str, Any]
    device_name: Annotated[str, Field(min_length=1, max_length=64)]
    challenge: Annotated[str, Field(pattern=B64, min_length=16, max_length=128)]
    signature: Annotated[str, Field(pattern=B64, min_length=16, max_length=128)]


class ScanBody(_Strict):
    login_id: Annotated[str, Field(pattern=B64, min_length=16, max_length=64)]
    qr_token: Annotated[str, Field(pattern=B64, min_length=16, max_length=64)]


class ApproveBody(_Strict):
    ecard_id: Annotated[str, Field(pattern=B64, min_length=16, max_length=32)]
    signature: Annotated[str, Field(pattern=B64, min_length=16, max_length=128)]


def _refused(exc: EcardRefused) -> Response:
    return problems.response(Problem(exc.status, exc.reason, exc.detail))


def _person(runtime: Runtime, request: Request, db: Session, *, enrolment: bool) -> str:
    """The person (public subject of the token's grant) behind the access token: scope `ecard`; to enrol, a login
    at the highest level within the last SSCARD_ECARD_ENROL_MAX_AGE seconds (else RFC 9470 step-up)."""
    token = resource.from_request(runtime, request)
    resource.require_scope(token, known_scopes.ECARD)
    if enrolment:
        step_up.require(token, acr=assurance.HIGH, max_age=runtime.settings.ecard_enrol_max_age)
    # The grant holds the public subject; the token's `sub` may be pairwise for the app's client.
    grant = db.get(OAuthGrant, token.grant_id) if token.grant_id is not None else None
    if grant is None:
        raise Problem(403, "person_required", "e-cards are managed by their holder, signed in")
    return grant.subject


@router.post("/v1/ecards/enrolment-challenge")
def enrolment_challenge(request: Request, runtime: RuntimeDep, db: DbSession) -> JSONResponse:
    subject = _person(runtime, request, db, enrolment=True)
    challenge, ttl = service.new_enrolment_challenge(runtime, subject)
    return JSONResponse(
        {"challenge": challenge, "issuer": runtime.settings.issuer, "expires_in": ttl}, headers=NO_STORE
    )


@router.post("/v1/ecards", status_code=201)
def enrol(request: Request, runtime: RuntimeDep, db: DbSession, body: RawBody) -> Response:
    subject = _person(runtime, request, db, enrolment=True)
    parsed = parse_body(EnrolBody, body)
    enrolment = service.Enrolment(subject, parsed.public_key, parsed.device_name, parsed.challenge, parsed.signature)
    try:
        row = service.enrol(runtime, db, enrolment)
    except EcardRefused as exc:
        return _refused(exc)
    return JSONResponse(service.describe(row), status_code=201, headers=NO_STORE)


@router.get("/v1/ecards")
def list_ecards(request: Request, runtime: RuntimeDep, db: DbSession) -> JSONResponse:
    subject = _person(runtime, request, db, enrolment=False)
    return JSONResponse({"ecards": [service.describe(r) for r in service.of_person(db, subject)]}, headers=NO_STORE)


@router.delete("/v1/ecards/{ecard_id}")
def revoke(ecard_id: str, request: Request, runtime: RuntimeDep, db: DbSession) -> Response:
    subject = _person(runtime, request, db, enrolment=False)
    try:
        row = service.revoke_own(db, subject, ecard_id)
    except EcardRefused as exc:
        return _refused(exc)
    return JSONResponse(service.describe(row), headers=NO_STORE)


# -- sign-in ----------------------------------------------------------------------------------------------


@router.get(signin.QR_PATH)
def qr_landing() -> PlainTextResponse:
    """Where a QR code leads a phone without the app: what to do instead (nothing happens here)."""
    return PlainTextResponse(
        "请用电子社保卡应用扫描此二维码。Scan this code with the electronic social security card app.",
        headers=NO_STORE,
    )


@router.get("/login/{login_id}/ecard")
def login_qr(login_id: str, request: Request, runtime: RuntimeDep) -> Response:
    login = pending.get(runtime.store, login_id)
    cookie = request.cookies.get(pending.browser_cookie(runtime.settings.issuer.startswith("https://")))
    if login is None or not pending.bound_to(login, cookie):
        raise Problem(404, "login_unknown", "no such login is pending in this browser (expired or finished)")
    try:
        code = signin.qr(runtime, login)
    except EcardRefused as exc:
        return _refused(exc)
    return JSONResponse(
        {"url": code.url, "qr_svg": pages.qr_svg(code.url), "expires_in": code.expires_in}, headers=NO_STORE
    )


@router.post("/v1/ecard/sign-ins/scan")
def scan(runtime: RuntimeDep, body: RawBody) -> Response:
    parsed = parse_body(ScanBody, body)
    try:
        answer = signin.scan(runtime, parsed.login_id, parsed.qr_token)
    except EcardRefused as exc:
        return _refused(exc)
    return JSONResponse(answer, headers=NO_STORE)


@router.post("/v1/ecard/sign-ins/{login_id}")
def approve(login_id: str, runtime: RuntimeDep, db: DbSession, body: RawBody) -> Response:
    parsed = parse_body(ApproveBody, body)
    # Refusals are returned, not raised, so that the unit of work commits their audit events.
    try:
        answer = signin.approve(runtime, db, login_id, parsed.ecard_id, parsed.signature)
    except EcardRefused as exc:
        return _refused(exc)
    except Throttled as exc:
        return problems.response(throttled(exc))
    return JSONResponse(answer, headers=NO_STORE)
