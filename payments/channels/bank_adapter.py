"""The bank channel adapter (payments/channels/base.py) over the gateway wire format in bank.py: online-banking
payments by redirect, refunds, signed callbacks and the daily statement, each call a signed JSON POST whose signed
answer is verified before anything in it is believed.

`BankGateway` is the signed HTTP client; the card account (card_adapter.py) and withholding
(payments/withholding/adapter.py) adapters use it too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import httpx

from keys.signed_messages import Peer
from payments.channels import bank
from payments.channels.base import (
    ChannelDeclined,
    ChannelEvent,
    ChannelTrade,
    ChannelUnavailable,
    CloseResult,
    Kind,
    PaymentOrderRef,
    PaymentStart,
    RefundEvent,
    RefundOutcome,
    RefundRequest,
    RefundStatus,
    StatementLine,
    TradeStatus,
    VerifiedCallback,
)
from payments.channels.common import Acknowledgement, ChannelRefusal

log = logging.getLogger("sscard.payments.bank")

NAME = "bank"
SYSTEM_ERROR = "SYSTEM_ERROR"  # the bank's "try again": unknown outcome, never a decline

_TRADE = {
    bank.PaymentState.NOT_FOUND: TradeStatus.NOT_FOUND,
    bank.PaymentState.UNPAID: TradeStatus.UNPAID,
    bank.PaymentState.PROCESSING: TradeStatus.PAYING,
    bank.PaymentState.PAID: TradeStatus.PAID,
    bank.PaymentState.CLOSED: TradeStatus.CLOSED,
    bank.PaymentState.FAILED: TradeStatus.FAILED,
}
_REFUND = {
    bank.RefundState.PROCESSING: RefundOutcome.PROCESSING,
    bank.RefundState.SUCCEEDED: RefundOutcome.SUCCEEDED,
    bank.RefundState.FAILED: RefundOutcome.FAILED,
}
_KIND = {
    bank.PaymentState.PAID: Kind.PAID,
    bank.PaymentState.FAILED: Kind.FAILED,
    bank.PaymentState.CLOSED: Kind.CLOSED,
}


@dataclass(frozen=True)
class BankConfig:
    merchant_id: str
    signing_key: bank.SigningKey = field(repr=False)  # ours: the bank holds its public half
    bank_keys: bank.KeyRing = field(repr=False)  # the bank's public keys, current and next
    max_age_seconds: int = 300
    future_skew_seconds: int = 30
    clock: Callable[[], float] = time.time

    @property
    def peer(self) -> Peer:
        return Peer(
            bank.SCHEME,
            self.merchant_id,
            self.signing_key,
            self.bank_keys,
            self.max_age_seconds,
            self.future_skew_seconds,
        )


class BankGateway:
    """Signed POSTs to the bank gateway. `client` is any httpx.Client whose base URL is the gateway (tests pass a
    TestClient on the sandbox's app)."""

    def __init__(self, config: BankConfig, client: httpx.Client) -> None:
        self.config = config
        self.client = client

    def post_raw(self, path: str, payload: Mapping[str, Any]) -> tuple[str, bytes]:
        """The verified answer's content type and bytes. Unreachable, 5xx, unsigned or wrongly signed answers raise
        ChannelUnavailable: nothing may be concluded from them."""
        config, peer = self.config, self.config.peer
        body = bank.dumps(payload)
        headers = peer.sign(bank.request_purpose(path), body, now=config.clock())
        headers["Content-Type"] = "application/json"
        try:
            response = self.client.post(path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ChannelUnavailable(f"bank {path}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise ChannelUnavailable(f"bank {path}: HTTP {response.status_code}")
        try:
            peer.verify(
                bank.response_purpose(path),
                response.headers,
                response.content,
                now=config.clock(),
                nonce=headers[bank.H_NONCE],
            )
        except ChannelRefusal as refusal:
            log.warning("bank %s: answer refused: %s (%s)", path, refusal.reason, refusal.message)
            raise ChannelUnavailable(f"bank {path}: unverifiable answer ({refusal.reason})") from None
        return response.headers.get("content-type", "").split(";")[0].strip(), response.content

    def post(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """A verified JSON answer with code OK; a signed decline raises ChannelDeclined."""
        _, content = self.post_raw(path, payload)
        return self._ok(path, content)

    @staticmethod
    def _ok(path: str, content: bytes) -> dict[str, Any]:
        try:
            answer = bank.loads(content)
        except ChannelRefusal:
            raise ChannelUnavailable(f"bank {path}: answer is not JSON") from None
        code = answer.get("code")
        if code == "OK":
            return answer
        if not isinstance(code, str) or code == SYSTEM_ERROR:
            raise ChannelUnavailable(f"bank {path}: {code if isinstance(code, str) else 'no code'}")
        message = answer.get("message")
        raise ChannelDeclined(code[:64], message[:200] if isinstance(message, str) else "")


def answer_field(answer: Mapping[str, Any], name: str, parse: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A field of a verified answer: a bank that signs nonsense is as unusable as one that is down."""
    try:
        return parse(answer, name, *args, **kwargs)
    except ChannelRefusal:
        raise ChannelUnavailable(f"bank answer: {name} missing or malformed") from None


def payment_state(answer: Mapping[str, Any], name: str = "status") -> bank.PaymentState:
    try:
        return bank.PaymentState(answer.get(name))
    except ValueError:
        raise ChannelUnavailable(f"bank answer: {name} unknown") from None


def same_order(answer: Mapping[str, Any], order_no: str) -> None:
    if answer.get("order_no") != order_no:
        raise ChannelUnavailable("bank answer: for another order")


def trade_from_answer(answer: Mapping[str, Any], order_no: str) -> ChannelTrade:
    same_order(answer, order_no)
    state = payment_state(answer)
    if state is bank.PaymentState.NOT_FOUND:
        return ChannelTrade(order_no, TradeStatus.NOT_FOUND, raw_state=state.value)
    paid_at: datetime | None = answer_field(
        answer, "paid_at", bank.timestamp_field, required=state is bank.PaymentState.PAID
    )
    return ChannelTrade(
        order_no=order_no,
        status=_TRADE[state],
        amount_fen=answer_field(answer, "amount_fen", bank.fen),
        channel_trade_no=answer.get("trade_no") if isinstance(answer.get("trade_no"), str) else None,
        paid_at=paid_at,
        raw_state=state.value,
    )


class BankAdapter:
    """Online banking: the payer is redirected to the bank's page; the bank calls back when the money is taken."""

    name = NAME
    mode = "redirect"

    def __init__(self, config: BankConfig, client: httpx.Client) -> None:
        self.config = config
        self.gateway = BankGateway(config, client)

    def _payment_request(self, order: PaymentOrderRef) -> dict[str, Any]:
        return {
            "order_no": order.order_no,
            "amount_fen": order.amount_fen,
            "currency": "CNY",
            "description": order.description[:128],
            "expires_at": bank.format_time(order.expires_at),
            "notify_url": order.notify_url,
            "mode": self.mode,
        }

    def create_payment(self, order: PaymentOrderRef) -> PaymentStart:
        answer = self.gateway.post("/gateway/v1/payments", self._payment_request(order))
        same_order(answer, order.order_no)
        if answer_field(answer, "amount_fen", bank.fen) != order.amount_fen:
            raise ChannelUnavailable("bank answer: another amount than asked")
        url = answer.get("pay_url")
        if not isinstance(url, str) or not url.startswith("https://"):
            raise ChannelUnavailable("bank answer: pay_url missing or not https")
        return PaymentStart(order.order_no, "redirect", {"url": url})

    def query_payment(self, order_no: str) -> ChannelTrade:
        return trade_from_answer(self.gateway.post("/gateway/v1/payments/query", {"order_no": order_no}), order_no)

    def close_payment(self, order_no: str) -> CloseResult:
        answer = self.gateway.post("/gateway/v1/payments/close", {"order_no": order_no})
        same_order(answer, order_no)
        state = payment_state(answer)
        if state is bank.PaymentState.PAID:
            return CloseResult.ALREADY_PAID
        if state is bank.PaymentState.NOT_FOUND:
            return CloseResult.NOT_FOUND
        if state in (bank.PaymentState.CLOSED, bank.PaymentState.FAILED):
            return CloseResult.CLOSED
        raise ChannelUnavailable(f"bank close answered {state.value}")

    def refund(self, request: RefundRequest) -> RefundStatus:
        answer = self.gateway.post(
            "/gateway/v1/refunds",
            {
                "order_no": request.order_no,
                "refund_no": request.refund_no,
                "amount_fen": request.amount_fen,
                "order_amount_fen": request.order_amount_fen,
                "reason": request.reason[:80],
                "notify_url": request.notify_url,
            },
        )
        return self._refund_status(answer, request.order_no, request.refund_no)

    def query_refund(self, order_no: str, refund_no: str) -> RefundStatus:
        answer = self.gateway.post("/gateway/v1/refunds/query", {"order_no": order_no, "refund_no": refund_no})
        return self._refund_status(answer, order_no, refund_no)

    @staticmethod
    def _refund_status(answer: Mapping[str, Any], order_no: str, refund_no: str) -> RefundStatus:
        same_order(answer, order_no)
        if answer.get("refund_no") != refund_no:
            raise ChannelUnavailable("bank answer: for another refund")
        try:
            state = bank.RefundState(answer.get("status"))
        except ValueError:
            raise ChannelUnavailable("bank answer: refund status unknown") from None
        bank_refund_no = answer.get("bank_refund_no")
        return RefundStatus(
            refund_no=refund_no,
            outcome=_REFUND[state],
            amount_fen=answer_field(answer, "amount_fen", bank.fen),
            channel_refund_no=bank_refund_no if isinstance(bank_refund_no, str) else None,
            raw_state=state.value,
        )

    def read_callback(self, headers: Mapping[str, str], body: bytes, *, now: float) -> VerifiedCallback:
        config = self.config
        verified = config.peer.verify(bank.NOTIFY, headers, body, now=now)
        notice = bank.parse_notification(body)
        event: ChannelEvent | RefundEvent
        if isinstance(notice, bank.PaymentNotice):
            event = ChannelEvent(
                channel=self.name,
                event_id=notice.event_id,
                order_no=notice.order_no,
                channel_trade_no=notice.trade_no,
                channel_state=notice.status.value,
                kind=_KIND.get(notice.status, Kind.OTHER),
                amount_fen=notice.amount_fen,
                currency=notice.currency,
                payload=notice.payload,
            )
        else:
            event = RefundEvent(
                channel=self.name,
                event_id=notice.event_id,
                refund_no=notice.refund_no,
                order_no=notice.order_no,
                channel_refund_no=notice.bank_refund_no,
                outcome=_REFUND[notice.status],
                amount_fen=notice.amount_fen,
                payload=notice.payload,
            )
        # Kept a minute beyond the window: by then the timestamp check refuses the replay on its own.
        ttl = config.max_age_seconds + config.future_skew_seconds + 60
        return VerifiedCallback(event, nonce=verified.nonce, nonce_ttl=ttl)

    def acknowledge(self, refusal: ChannelRefusal | None = None, *, failed: bool = False) -> Acknowledgement:
        if refusal is None and not failed:
            return bank.acknowledge_success()
        return bank.acknowledge_refusal(refusal)

    def fetch_statement(self, day: date) -> bytes:
        content_type, content = self.gateway.post_raw("/gateway/v1/statements", {"date": day.isoformat()})
        if content_type == "application/json":
            BankGateway._ok("/gateway/v1/statements", content)  # raises: a statement never comes as JSON
            raise ChannelUnavailable("bank statement: a JSON answer without a statement")
        return content

    def parse_statement(self, data: Iterable[bytes]) -> Iterator[StatementLine]:
        return bank.parse_statement(data, merchant=self.config.merchant_id)

    def render_statement(self, day: date, lines: Iterable[StatementLine]) -> bytes:
        return bank.render_statement(self.config.merchant_id, day, lines)
