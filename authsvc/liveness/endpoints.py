"""The liveness routes: the vendor's verdict callback, and the browser's "start a face check" for its login.

`POST /v1/liveness/callbacks/{vendor}` answers the vendor in the form it expects (docs/liveness.md):
* 200 `{"code":"OK"}`: the verdict is ours (applied, or the same one again, or recorded as late): stop retrying;
* 503 `{"code":"RETRY"}`: our failure (store or database outage, keys unusable): nothing recorded, deliver again;
* 4xx problem+json: refused (malformed, forged, stale, replayed, unknown session, contradicting): final, a retry of
  the same message gets the same answer. Refusals are returned, not raised, so their audit rows commit.

`POST /login/{id}/face` is bound to the browser that started the login (its cookie), like the login page's routes.
"""

from __future__ import annotations

import contextlib
import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from redis import RedisError
from sqlalchemy.exc import SQLAlchemyError

from authsvc import problems
from authsvc.deps import DbSession, RawBody, RuntimeDep
from authsvc.liveness import verdicts, wire
from authsvc.liveness.rules import Applied
from authsvc.liveness.vendor import Acknowledgement, CallbackRejected, RejectReason, VendorUnavailable
from authsvc.login import face, pages, pending
from authsvc.problems import Problem

log = logging.getLogger("sscard.liveness")
router = APIRouter(tags=["liveness"])

NO_STORE = {"Cache-Control": "no-store"}
_REJECTED = {
    RejectReason.MALFORMED: (400, "callback_malformed"),
    RejectReason.SIGNATURE: (403, "callback_signature"),
    RejectReason.UNKNOWN_KEY: (403, "callback_unknown_key"),
    RejectReason.STALE: (403, "callback_stale"),
    RejectReason.MISMATCH: (403, "callback_mismatch"),
}
_REFUSED = {
    Applied.CONFLICT: (409, "verdict_conflict", "this session already has another verdict"),
    Applied.UNKNOWN: (404, "session_unknown", "no such liveness session of this vendor"),
    Applied.MISMATCH: (422, "biz_ref_mismatch", "biz_ref is not this session's"),
}


def _answer(ack: Acknowledgement) -> Response:
    return Response(content=ack.body, status_code=ack.status, media_type=ack.content_type, headers=NO_STORE)


def _retry() -> Response:
    status, body = wire.acknowledgement(retry=True)
    return _answer(Acknowledgement(status, body, "application/json"))


@router.post("/v1/liveness/callbacks/{vendor}", response_class=Response)
def verdict_callback(vendor: str, request: Request, body: RawBody, runtime: RuntimeDep, db: DbSession) -> Response:
    liveness = runtime.liveness
    if not liveness.name or vendor != liveness.name:
        return problems.response(Problem(404, "vendor_unknown", "no liveness vendor of this name is configured"))
    try:
        adapter = liveness.vendor()
    except VendorUnavailable as exc:
        # Ours, not the vendor's: it retries and a retry may find the keys back.
        log.error("liveness callback not read: %s", exc)
        return _retry()
    try:
        verdict = adapter.read_callback(request.headers, body, now=liveness.clock())
        # Single use once known genuine (a forger cannot spend nonces); after the window the timestamp refuses it.
        nonce_key = f"liveness:nonce:{vendor}:{verdict.nonce}"
        if not runtime.store.add(nonce_key, b"1", verdict.nonce_ttl):
            return problems.response(Problem(409, "callback_replayed", "this callback's nonce was used already"))
    except CallbackRejected as exc:
        log.warning("liveness callback refused: %s (%s)", exc.reason, exc.message)
        status, reason = _REJECTED[exc.reason]
        return problems.response(Problem(status, reason, exc.message))
    except RedisError:
        log.exception("liveness callback: the shared store did not answer")
        return _retry()
    try:
        applied = verdicts.apply(runtime, db, verdict)
        db.flush()
    except (SQLAlchemyError, RedisError):
        log.exception("liveness verdict not recorded")
        db.rollback()
        # Nothing of this message is kept, its nonce neither: the vendor may deliver the very same bytes again.
        with contextlib.suppress(RedisError):
            runtime.store.take(nonce_key)
        return _retry()
    if applied in _REFUSED:
        status, reason, detail = _REFUSED[applied]
        return problems.response(Problem(status, reason, detail))
    return _answer(adapter.acknowledge())


@router.post("/login/{login_id}/face")
def face_start(login_id: str, request: Request, runtime: RuntimeDep, db: DbSession) -> Response:
    secure = runtime.settings.issuer.startswith("https://")
    login = pending.get(runtime.store, login_id)
    if login is None or not pending.bound_to(login, request.cookies.get(pending.browser_cookie(secure))):
        raise Problem(404, "login_unknown", "no such login is pending in this browser (expired or finished)")
    try:
        started = face.start(runtime, db, login)
    except face.FaceRefused as exc:
        return problems.response(Problem(exc.status, exc.reason, exc.detail))
    return JSONResponse(
        {
            "capture_url": started.capture_url,
            "qr_svg": pages.qr_svg(started.capture_url),
            "expires_in": started.expires_in,
        },
        headers=NO_STORE,
    )
