"""`/v1/payments/refunds`: operators request, read, approve and reject refunds. Refusals are problem+json with a
`reason`.

Operators are people signed in at an operator console whose access token carries scope `payments:refund` (only
operator consoles are registered for it). A client-credentials token is refused even with the scope: a refund must
name the person who asked, and the four-eyes rule needs two people, not two programs. The operator recorded on a
refund is the token's client id and subject.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy.exc import IntegrityError

from authsvc.database import unit_of_work
from authsvc.deps import RawBody, RuntimeDep
from authsvc.oauth import resource
from authsvc.oauth import scopes as known_scopes
from authsvc.oauth.models import OAuthGrant
from authsvc.problems import Problem
from authsvc.runtime import Runtime
from payments.api import idempotency
from payments.channels.registry import Channels, ChannelsDep
from payments.orders import accounting
from payments.refunds import domain, service
from payments.refunds.domain import Action, Operator, RefundInvalid

PATH = "/v1/payments/refunds"
router = APIRouter(prefix=PATH, tags=["payments"])
log = logging.getLogger("sscard.payments.refunds")
JSON = "application/json"
T = TypeVar("T")
STATES = (
    accounting.AWAITING_APPROVAL,
    accounting.REQUESTED,
    accounting.SUCCEEDED,
    accounting.FAILED,
    accounting.REJECTED,
)


def operator(request: Request, runtime: RuntimeDep) -> Operator:
    token = resource.from_request(runtime, request)
    resource.require_scope(token, known_scopes.PAYMENTS_REFUND)
    if token.grant_id is None:
        raise Problem(403, "operator_login_required", "refunds are requested and approved by people signed in")
    # The person, not what this console is told: a console registered with pairwise subjects sees one person under
    # another `sub` than the next console does, and the four-eyes rule is about people. The grant holds the public
    # subject (as for payments/orders/service.card_for_payment).
    with unit_of_work(runtime.sessions) as db:
        grant = db.get(OAuthGrant, token.grant_id)
        person = grant.subject if grant is not None else None
    if person is None:
        raise Problem(403, "operator_login_required", "the sign-in this token came from has ended")
    return Operator(client_id=token.client_id, subject=person)


OperatorDep = Annotated[Operator, Depends(operator)]


def _json(doc: object, status: int = 200, replayed: bool = False) -> Response:
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    headers = {"Cache-Control": "no-store"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _stored(response: Response) -> idempotency.Stored:
    return idempotency.Stored(response.status_code, JSON, bytes(response.body))


def _parsed(parse: Callable[[object], T], body: bytes) -> T:
    """The body as `parse` reads it: 400 invalid_json when it is not JSON, 422 refund_invalid when `parse` refuses."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Problem(400, "invalid_json", "the body must be a JSON object") from None
    try:
        return parse(doc)
    except RefundInvalid as exc:
        raise Problem(422, "refund_invalid", str(exc)) from None


def _refused(exc: service.Refusal) -> Problem:
    return Problem(exc.status, exc.reason, exc.detail)


@dataclass(frozen=True)
class _Created:
    refund_no: str
    fingerprint: str  # the body digest the refund was created with
    new: bool


def _earlier(runtime: Runtime, claim: idempotency.Claim) -> _Created | None:
    """The refund this key created already: the row answers when the store lost the response."""
    with unit_of_work(runtime.sessions) as db:
        refund = service.by_idempotency_key(db, claim.key_digest)
        return None if refund is None else _Created(refund.refund_no, refund.idempotency_body or "", new=False)


def _create(runtime: Runtime, who: Operator, claim: idempotency.Claim, body: bytes) -> _Created:
    spec = _parsed(domain.parse_request, body)
    try:
        with unit_of_work(runtime.sessions) as db:
            refund = service.create(
                db,
                spec,
                who,
                threshold_fen=runtime.settings.refund_approval_above_fen,
                idempotency_key=claim.key_digest,
                idempotency_body=claim.fingerprint,
            )
            refund_no = refund.refund_no
    except service.Refusal as exc:
        raise _refused(exc) from None
    except IntegrityError:
        # A concurrent request under this key inserted first (its marker expired meanwhile): its refund answers.
        earlier = _earlier(runtime, claim)
        if earlier is None:
            raise
        return earlier
    log.info(
        "refund %s of %s fen on order %s requested by %s/%s",
        refund_no,
        spec.amount_fen,
        spec.order_no,
        who.client_id,
        who.subject,
    )
    return _Created(refund_no, claim.fingerprint, new=True)


def _view(runtime: Runtime, refund_no: str) -> dict[str, object]:
    with unit_of_work(runtime.sessions) as db:
        refund = service.get(db, refund_no)
        assert refund is not None  # refunds are never deleted
        return service.describe(refund)


@router.post("")
def request_refund(
    request: Request, who: OperatorDep, runtime: RuntimeDep, channels: ChannelsDep, body: RawBody
) -> Response:
    key = idempotency.check_key(request.headers.get(idempotency.HEADER))
    claim = idempotency.begin(
        runtime, scope="refunds", client_id=who.client_id, subject=who.subject, key=key, body=body
    )
    if isinstance(claim, idempotency.Stored):
        return idempotency.response(claim, replayed=True)
    try:
        created = _earlier(runtime, claim) or _create(runtime, who, claim, body)
        if created.new:
            # After the commit: the channel is never asked for a refund the database does not hold.
            service.send(runtime, channels, created.refund_no)
        answer = _json(_view(runtime, created.refund_no), 201, replayed=not created.new)
    except BaseException:
        idempotency.release(runtime, claim)
        raise
    idempotency.finish(runtime, claim, _stored(answer), fingerprint=created.fingerprint)
    idempotency.check_same_body(created.fingerprint, claim.fingerprint)
    return answer


@router.get("")
def list_refunds(
    who: OperatorDep,
    runtime: RuntimeDep,
    order_no: Annotated[str | None, Query(max_length=32)] = None,
    state: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_LIST)] = service.MAX_LIST,
) -> Response:
    if state is not None and state not in STATES:
        raise Problem(400, "invalid_request", f"state must be one of {', '.join(STATES)}")
    with unit_of_work(runtime.sessions) as db:
        refunds = [service.describe(r) for r in service.find(db, order_no=order_no, state=state, limit=limit)]
    return _json({"refunds": refunds})


@router.get("/{refund_no}")
def get_refund(refund_no: str, who: OperatorDep, runtime: RuntimeDep) -> Response:
    with unit_of_work(runtime.sessions) as db:
        refund = service.get(db, refund_no[:40])
        answer = service.describe(refund) if refund is not None else None
    if answer is None:
        raise Problem(404, "refund_unknown", "no such refund")
    return _json(answer)


def _decide(
    runtime: Runtime, channels: Channels, refund_no: str, who: Operator, action: Action, body: bytes
) -> Response:
    note = _parsed(domain.parse_reason, body)
    try:
        with unit_of_work(runtime.sessions) as db:
            refund, send = service.decide(db, refund_no[:40], who, action, note)
            refund_no = refund.refund_no
    except service.Refusal as exc:
        raise _refused(exc) from None
    if send:
        service.send(runtime, channels, refund_no)
    return _json(_view(runtime, refund_no))


@router.post("/{refund_no}/approve")
def approve(refund_no: str, who: OperatorDep, runtime: RuntimeDep, channels: ChannelsDep, body: RawBody) -> Response:
    return _decide(runtime, channels, refund_no, who, Action.APPROVE, body)


@router.post("/{refund_no}/reject")
def reject(refund_no: str, who: OperatorDep, runtime: RuntimeDep, channels: ChannelsDep, body: RawBody) -> Response:
    return _decide(runtime, channels, refund_no, who, Action.REJECT, body)
