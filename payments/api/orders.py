"""`/v1/payments/orders`: create a contribution order, read one, list the caller's own. Access tokens with scope
`payments`; a cardholder's token (a login) acts as a citizen, a client-credentials token as a back end.
Refusals are problem+json with a `reason`."""

from __future__ import annotations

import json
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from authsvc.database import unit_of_work
from authsvc.deps import RawBody, RuntimeDep
from authsvc.oauth import resource
from authsvc.oauth import scopes as known_scopes
from authsvc.problems import Problem
from authsvc.runtime import Runtime
from payments.api import idempotency
from payments.orders import service
from payments.orders.domain import OrderError

PATH = "/v1/payments/orders"
router = APIRouter(prefix=PATH, tags=["payments"])
log = logging.getLogger("sscard.payments")
JSON = "application/json"


def payments_caller(request: Request, runtime: RuntimeDep) -> service.Caller:
    token = resource.authenticate(
        runtime,
        method=request.method,
        url=runtime.settings.issuer + request.url.path,
        authorization=request.headers.get("authorization"),
        dpop=request.headers.getlist("dpop"),
    )
    resource.require_scope(token, known_scopes.PAYMENTS)
    # Client credentials carry no grant: a back end acting for itself. Everything else is a cardholder's login.
    return service.Caller(client_id=token.client_id, subject=token.subject, citizen=token.grant_id is not None)


CallerDep = Annotated[service.Caller, Depends(payments_caller)]


def _json(doc: object, status: int = 200) -> Response:
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type=JSON, headers={"Cache-Control": "no-store"})


def _create(runtime: Runtime, caller: service.Caller, body: bytes) -> idempotency.Stored:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Problem(400, "invalid_json", "the body must be a JSON object") from None
    try:
        spec = service.spec_from_json(doc, caller)
    except OrderError as exc:
        raise Problem(422, "order_invalid", str(exc)) from None
    # Our own unit of work rather than DbSession: the response may be kept for replay only once the commit is done.
    with unit_of_work(runtime.sessions) as db:
        order = service.create(db, spec)
        answer = service.describe(order)
    log.info("order %s created by %s for %s", order.order_no, caller.client_id, spec.masked_ssn)
    return idempotency.Stored(201, JSON, json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode())


@router.post("")
def create_order(request: Request, caller: CallerDep, runtime: RuntimeDep, body: RawBody) -> Response:
    key = idempotency.check_key(request.headers.get(idempotency.HEADER))
    claim = idempotency.begin(
        runtime, scope="orders", client_id=caller.client_id, subject=caller.subject, key=key, body=body
    )
    if isinstance(claim, idempotency.Stored):
        return Response(
            claim.body,
            status_code=claim.status,
            media_type=claim.media_type,
            headers={"Cache-Control": "no-store", "Idempotent-Replayed": "true"},
        )
    try:
        created = _create(runtime, caller, body)
    except BaseException:
        # Refused, or the commit failed: nothing was written, so the key is free for a corrected retry.
        idempotency.release(runtime, claim)
        raise
    idempotency.finish(runtime, claim, created)
    return Response(
        created.body, status_code=created.status, media_type=created.media_type, headers={"Cache-Control": "no-store"}
    )


@router.get("")
def list_orders(
    caller: CallerDep, runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=service.MAX_LIST)] = service.MAX_LIST
) -> Response:
    with unit_of_work(runtime.sessions) as db:
        orders = [service.describe(o) for o in service.own_orders(db, caller, limit)]
    return _json({"orders": orders})


@router.get("/{order_id}")
def get_order(order_id: str, caller: CallerDep, runtime: RuntimeDep) -> Response:
    with unit_of_work(runtime.sessions) as db:
        order = service.own_order(db, caller, order_id[:64])
        answer = service.describe(order) if order is not None else None
    if answer is None:
        raise Problem(404, "order_unknown", "no such order among yours")
    return _json(answer)
