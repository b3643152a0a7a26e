"""POST /v1/payments/callbacks/{channel}: verify, spend the nonce, record in the inbox, apply, acknowledge.

The channel's adapter (payments/channels/registry.py) verifies the callback and says how to answer. Each channel
gets the answer it expects: WeChat Pay 204, or `{"code":"FAIL","message":...}` with a 4xx for a callback we refuse
and a 5xx for our own failure (it retries both); Alipay HTTP 200 with the exact body `success`, `fail` otherwise.
Every verified event is acknowledged once recorded, whatever its outcome (conflict, held, unknown order): retrying
would change nothing, and the inbox row is what review reads. The inbox row commits with the request's unit of work
before the answer is sent (authsvc/deps.py), so a success is never answered for an event the database does not hold.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from redis import RedisError
from sqlalchemy.exc import SQLAlchemyError

from authsvc.deps import DbSession, RawBody, RuntimeDep
from payments.callbacks import inbox
from payments.channels.base import ChannelUnavailable
from payments.channels.common import Acknowledgement, ChannelRefusal, RefusalReason, json_failure
from payments.channels.registry import ChannelsDep

log = logging.getLogger("sscard.payments.callbacks")

router = APIRouter(prefix="/v1/payments/callbacks", tags=["payments"])


def _answer(ack: Acknowledgement) -> Response:
    return Response(content=ack.body, status_code=ack.status, media_type=ack.content_type)


@router.post("/{channel}", response_class=Response)
def channel_callback(
    channel: str, request: Request, body: RawBody, runtime: RuntimeDep, db: DbSession, channels: ChannelsDep
) -> Response:
    adapter = channels.get(channel)
    if adapter is None:
        # Unknown to this deployment: a retry may find it configured, so this is our failure, not the sender's.
        log.error("a callback for channel %r arrived but it is not configured", channel[:32])
        return _answer(json_failure(503, "channel not configured"))
    try:
        verified = adapter.read_callback(request.headers, body, now=channels.clock())
        # Single use, once the callback is known good (a forger cannot spend nonces): a replay inside the window is
        # refused here; after the window the timestamp check refuses it instead.
        if verified.nonce is not None and not runtime.store.add(
            f"payments:{channel}-nonce:{verified.nonce}", b"1", verified.nonce_ttl
        ):
            raise ChannelRefusal(RefusalReason.STALE, "nonce already used")
    except ChannelRefusal as refusal:
        log.warning("%s callback refused: %s (%s)", channel, refusal.reason, refusal.message)
        return _answer(adapter.acknowledge(refusal))
    except ChannelUnavailable:
        # Configured, but its keys are not usable now (payments/channels/setup.py logged why): our failure, as for a
        # channel not configured; the channel retries and nothing is recorded.
        return _answer(json_failure(503, "channel not available"))
    except RedisError:
        # The nonce could not be spent, so the callback cannot be told from a replay: our failure, in the channel's
        # own words, so that it retries; nothing is recorded.
        log.exception("%s callback: the shared store did not answer", channel)
        return _answer(adapter.acknowledge(failed=True))
    try:
        inbox.receive(db, verified.event)
    except SQLAlchemyError:
        log.exception("%s event %s not recorded", channel, verified.event.event_id)
        db.rollback()
        return _answer(adapter.acknowledge(failed=True))
    return _answer(adapter.acknowledge())
