"""`/v1/payments/orders`: create a contribution order, read one, list the caller's own. Access tokens with scope
`payments`; a cardholder's token (a login) acts as a citizen, a client-credentials token as a back end.
Refusals are problem+json with a `reason`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy.exc import IntegrityError

from authsvc.database import unit_of_work
from authsvc.deps import RawBody, RuntimeDep
from authsvc.oauth import resource, step_up
from authsvc.oauth import scopes as known_scopes
from authsvc.problems import Problem
from authsvc.runtime import Runtime
from payments.api import idempotency
from payments.channels import setup
from payments.channels.base import ChannelDeclined, ChannelUnavailable
from payments.channels.registry import ChannelsDep
from payments.orders import checkout, service
from payments.orders.domain import OrderError
from payments.orders.models import PaymentOrder
from payments.withholding.agreements import AgreementError

PATH = "/v1/payments/orders"
router = APIRouter(prefix=PATH, tags=["payments"])
log = logging.getLogger("sscard.payments")
JSON = "application/json"


def payments_token(request: Request, runtime: RuntimeDep) -> resource.AccessToken:
    token = resource.from_request(runtime, request)
    resource.require_scope(token, known_scopes.PAYMENTS)
    return token


TokenDep = Annotated[resource.AccessToken, Depends(payments_token)]


def payments_caller(token: TokenDep) -> service.Caller:
    # A token from a person's login (a portal's grant or a kiosk's card login) carries the time of that login;
    # a client-credentials token carries none: a back end acting for itself.
    citizen = token.grant_id is not None or token.auth_time is not None
    return service.Caller(client_id=token.client_id, subject=token.subject, citizen=citizen)


CallerDep = Annotated[service.Caller, Depends(payments_caller)]


def _json(doc: object, status: int = 200) -> Response:
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type=JSON, headers={"Cache-Control": "no-store"})


@dataclass(frozen=True)
class _Outcome:
    response: idempotency.Stored
    fingerprint: str  # the HMAC of the body the order was created with
    replayed: bool  # the order existed already: rebuilt from its row, not created now


def _answer(order: PaymentOrder) -> idempotency.Stored:
    # A pure function of the columns fixed at creation (service.describe_created), so the first answer and one
    # rebuilt from the row later are the same bytes.
    body = json.dumps(service.describe_created(order), ensure_ascii=False, separators=(",", ":")).encode()
    return idempotency.Stored(201, JSON, body)


def _earlier(runtime: Runtime, claim: idempotency.Claim) -> _Outcome | None:
    """The order a request under this key created already, if any. The store normally answers for it, but it has no
    response when the creating worker died (or the store failed) between the commit and keeping the response."""
    with unit_of_work(runtime.sessions) as db:
        order = service.order_by_idempotency_key(db, claim.key_digest)
        if order is None:
            return None
        # Orders get a key digest only together with a body digest (both set in _create).
        return _Outcome(_answer(order), order.idempotency_body or "", replayed=True)


def _create(runtime: Runtime, caller: service.Caller, claim: idempotency.Claim, body: bytes) -> _Outcome:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Problem(400, "invalid_json", "the body must be a JSON object") from None
    try:
        spec = service.spec_from_json(doc, caller, service.configured_tiers(runtime.settings.payment_tiers))
    except OrderError as exc:
        raise Problem(422, "order_invalid", str(exc)) from None
    # Our own unit of work rather than DbSession: the response may be kept for replay only once the commit is done.
    try:
        with unit_of_work(runtime.sessions) as db:
            order = service.create(db, spec, idempotency_key=claim.key_digest, idempotency_body=claim.fingerprint)
            answer = _answer(order)
    except AgreementError as exc:
        raise Problem(422, "agreement_required", str(exc)) from None
    except IntegrityError:
        # Another request under this key inserted first (its marker expired while it ran, or the store lost it):
        # the unique key digest refused ours, and its order, committed by now, is the answer.
        earlier = _earlier(runtime, claim)
        if earlier is None:  # some other constraint: a real failure
            raise
        log.info("order under a concurrent duplicate key by %s: answered with the first", caller.client_id)
        return earlier
    log.info("order %s created by %s for %s", order.order_no, caller.client_id, spec.masked_ssn)
    return _Outcome(answer, claim.fingerprint, replayed=False)


@router.post("")
def create_order(request: Request, caller: CallerDep, runtime: RuntimeDep, body: RawBody) -> Response:
    key = idempotency.check_key(request.headers.get(idempotency.HEADER))
    claim = idempotency.begin(
        runtime, scope="orders", client_id=caller.client_id, subject=caller.subject, key=key, body=body
    )
    if isinstance(claim, idempotency.Stored):
        return idempotency.response(claim, replayed=True)
    try:
        # The database has the last word on the key: the store may have lost a response it should hold.
        outcome = _earlier(runtime, claim) or _create(runtime, caller, claim, body)
    except BaseException:
        # Refused, or the commit failed: nothing was written, so the key is free for a corrected retry.
        idempotency.release(runtime, claim)
        raise
    # Kept under the fingerprint of the body the order was made from, so that later requests with another body
    # are refused by the store alone.
    idempotency.finish(runtime, claim, outcome.response, fingerprint=outcome.fingerprint)
    idempotency.check_same_body(outcome.fingerprint, claim.fingerprint)
    return idempotency.response(outcome.response, replayed=outcome.replayed)


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


@router.post("/{order_id}/payment")
def start_payment(
    order_id: str, token: TokenDep, caller: CallerDep, runtime: RuntimeDep, channels: ChannelsDep
) -> Response:
    """Start (or ask again for) the payment of one of the caller's orders at its channel: the QR code, the page to
    open, or, for the card's financial account, the charge itself. Safe to repeat: the channel answers for the
    same order with the same payment."""
    settings = runtime.settings
    with unit_of_work(runtime.sessions) as db:
        order = service.own_order(db, caller, order_id[:64])
        if order is None:
            raise Problem(404, "order_unknown", "no such order among yours")
        try:
            checkout.check_startable(order)
        except checkout.NotStartable as exc:
            raise Problem(409, exc.reason, str(exc)) from None
        payer_ref = None
        required = checkout.REQUIRED_ACR.get(order.channel)
        if required is not None:
            # RFC 9470: the portal or kiosk sends the cardholder back for a card + PIN login.
            step_up.require(token, acr=required)
            payer_ref = service.card_for_payment(db, token)
            if payer_ref is None:
                raise Problem(409, "card_unavailable", "no active card of this cardholder can pay")
        ref = checkout.order_ref(
            order,
            notify_url=setup.notify_url(settings, order.channel),
            expires_at=checkout.expiry(order, settings.payment_order_ttl),
            payer_ref=payer_ref,
        )
    adapter = channels.get(order.channel)
    if adapter is None:
        raise Problem(
            503, "channel_unavailable", f"the {order.channel} channel is not available", headers={"Retry-After": "30"}
        )
    try:
        started = checkout.start(adapter, ref, runtime.sessions)
    except ChannelUnavailable:
        log.warning("order %s: %s did not answer", ref.order_no, order.channel)
        raise Problem(
            503, "channel_unavailable", "the channel did not answer; try again", headers={"Retry-After": "5"}
        ) from None
    except ChannelDeclined as exc:
        raise Problem(409, "channel_declined", f"the channel declined: {exc.code}", channel_code=exc.code) from None
    payment = {"method": started.start.method, **started.start.data}
    return _json({"order": service.describe(started.order), "payment": payment})
