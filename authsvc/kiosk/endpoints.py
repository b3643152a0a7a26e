"""Kiosk login routes: parse, call the service, map refusals to problem details."""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from authsvc import problems
from authsvc.deps import DbSession, RawBody, RuntimeDep
from authsvc.kiosk import service
from authsvc.kiosk.signature import AuthenticatedTerminal
from authsvc.kiosk.throttle import Throttled
from authsvc.kiosk.verification import CardEvidence, Refused
from authsvc.problems import Problem
from card.request_signing import b64url, b64url_decode

M = TypeVar("M", bound=BaseModel)

router = APIRouter(prefix="/v1/kiosk", tags=["kiosk"])

STATUS = {"login_unknown": 404, "invalid_request": 400}  # every other refusal of a card is 422

B64 = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StartBody(_Strict):
    pass


class CompleteBody(_Strict):
    ef05: Annotated[B64, Field(min_length=1, max_length=700)]
    ef06: Annotated[B64, Field(min_length=1, max_length=700)]
    response: Annotated[B64, Field(min_length=2, max_length=200)]
    certificate: Annotated[B64, Field(min_length=1, max_length=6000)] | None = None


class AbortBody(_Strict):
    reason: Literal["pin_wrong", "pin_blocked", "card_removed", "card_not_recognised", "cancelled"]
    tries_left: Annotated[int, Field(ge=0, le=15)] | None = None
    card_number: Annotated[str, Field(pattern=r"^[A-Z]\d{8}$")] | None = None

    @model_validator(mode="after")
    def _tries_only_with_wrong_pin(self) -> AbortBody:
        if self.tries_left is not None and self.reason != "pin_wrong":
            raise ValueError("tries_left goes with reason pin_wrong only")
        return self


def parse_body(model: type[M], body: bytes, *, empty_ok: bool = False) -> M:
    if empty_ok and not body.strip():
        body = b"{}"
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        where = "; ".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in exc.errors()[:5])
        raise Problem(400, "invalid_request", where or "malformed body") from None


def evidence_from(body: bytes) -> CardEvidence:
    """The card's answers from a completion body (the kiosk's and the browser helper's are the same)."""
    parsed = parse_body(CompleteBody, body)
    try:
        return CardEvidence(
            ef05=b64url_decode(parsed.ef05),
            ef06=b64url_decode(parsed.ef06),
            response=b64url_decode(parsed.response),
            certificate=b64url_decode(parsed.certificate) if parsed.certificate else None,
        )
    except ValueError:
        raise Problem(400, "invalid_request", "a field is not valid base64url") from None


def refused(exc: Refused) -> Problem:
    return Problem(STATUS.get(exc.reason, 422), exc.reason, exc.detail)


def throttled(exc: Throttled) -> Problem:
    return Problem(429, "throttled", str(exc), headers={"Retry-After": str(exc.retry_after)})


class StartAnswer(BaseModel):
    login_id: str
    challenge: str
    expires_in: int


@router.post("/logins", status_code=201, response_model=StartAnswer)
def start(
    terminal: AuthenticatedTerminal, runtime: RuntimeDep, session: DbSession, body: RawBody
) -> StartAnswer | JSONResponse:
    parse_body(StartBody, body, empty_ok=True)
    try:
        pending = service.start_login(runtime, session, terminal)
    except Throttled as exc:
        return problems.response(throttled(exc))
    return StartAnswer(
        login_id=pending.login_id, challenge=b64url(pending.challenge), expires_in=runtime.settings.challenge_ttl
    )


class Identity(BaseModel):
    subject: str
    name: str
    ssn: str
    card_number: str
    generation: int


class LoginAnswer(BaseModel):
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    access_token: str
    id_token: str
    expires_in: int
    acr: str
    amr: list[str]
    identity: Identity


@router.post("/logins/{login_id}/complete", response_model=LoginAnswer)
def complete(
    login_id: str,
    terminal: AuthenticatedTerminal,
    runtime: RuntimeDep,
    session: DbSession,
    body: RawBody,
    response: Response,
) -> LoginAnswer | JSONResponse:
    evidence = evidence_from(body)
    # Refusals are returned, not raised, so that the unit of work commits their audit events.
    try:
        result = service.complete_login(runtime, session, terminal, login_id, evidence)
    except Refused as exc:
        return problems.response(refused(exc))
    except Throttled as exc:
        return problems.response(throttled(exc))
    response.headers["Cache-Control"] = "no-store"
    return LoginAnswer(
        access_token=result.tokens.access_token,
        id_token=result.tokens.id_token,
        expires_in=result.tokens.expires_in,
        acr=result.auth.acr,
        amr=result.auth.amr,
        identity=Identity(**service.identity(result)),
    )


@router.post("/logins/{login_id}/abort", status_code=204)
def abort(
    login_id: str, terminal: AuthenticatedTerminal, runtime: RuntimeDep, session: DbSession, body: RawBody
) -> Response:
    parsed = parse_body(AbortBody, body)
    try:
        service.abort_login(
            runtime,
            session,
            terminal,
            login_id,
            reason=parsed.reason,
            tries_left=parsed.tries_left,
            card_number=parsed.card_number,
        )
    except Refused as exc:
        return problems.response(refused(exc))
    return Response(status_code=204)
