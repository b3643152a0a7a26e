"""The channel adapter interface: what the rest of payments asks of any payment channel.

An adapter turns our calls (create a payment, query it, close it, refund, fetch the day's statement) into the
channel's signed wire requests, and the channel's signed callbacks into verified events. It holds no database and
decides nothing about orders: `payments/callbacks`, `payments/recovery`, `payments/refunds` and
`payments/reconciliation` do that with what it returns. Every adapter has a sandbox simulator in
`payments/sandbox/` that speaks the same wire format, faults included, so the adapters are tested over real HTTP.

Errors are two kinds, and callers treat them differently:
* `ChannelUnavailable`: the outcome is unknown (timeout, connection refused, 5xx, SYSTEM_ERROR, a response whose
  signature does not verify). Nothing may be concluded; retry later, query before acting again.
* `ChannelDeclined`: the channel answered, signed, that it will not do it (closed order, balance too low, a refund
  above what is left). Final for this request.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from payments.channels.common import Acknowledgement, ChannelRefusal


class Kind(StrEnum):
    """What a payment event means for its order."""

    PAID = "paid"
    FAILED = "failed"
    CLOSED = "closed"
    OTHER = "other"


@dataclass(frozen=True)
class ChannelEvent:
    """A verified payment event, whatever the channel: what the inbox needs to record and apply it."""

    channel: str
    event_id: str  # unique per channel: deduplicates redeliveries
    order_no: str
    channel_trade_no: str
    channel_state: str
    kind: Kind
    amount_fen: int
    currency: str
    payload: dict[str, Any]


class RefundOutcome(StrEnum):
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class RefundEvent:
    """A verified refund notification (WeChat Pay's refund notify, Alipay's refund notice, the bank's callback)."""

    channel: str
    event_id: str
    refund_no: str
    order_no: str
    channel_refund_no: str
    outcome: RefundOutcome
    amount_fen: int
    payload: dict[str, Any]
    # Alipay's refund notice carries `refund_fee`, the total refunded on the trade so far, not this refund's amount.
    amount_is_total: bool = False


@dataclass(frozen=True)
class VerifiedCallback:
    """A callback whose signature and time window held. `nonce`, when the channel has one, must still be spent
    single-use by the caller (for `nonce_ttl` seconds) before the event is acted on."""

    event: ChannelEvent | RefundEvent
    nonce: str | None = None
    nonce_ttl: int = 0


class TradeStatus(StrEnum):
    """A payment as the channel's query reports it, in our words."""

    NOT_FOUND = "not_found"  # the channel has no such payment (never created there)
    UNPAID = "unpaid"  # created, nothing taken yet (WeChat NOTPAY, Alipay WAIT_BUYER_PAY)
    PAYING = "paying"  # the payer is confirming (USERPAYING): neither paid nor closable yet
    PAID = "paid"  # the money was taken (also when later refunded at the channel)
    CLOSED = "closed"  # closed or revoked unpaid
    FAILED = "failed"  # the payment failed (PAYERROR, a declined debit)


@dataclass(frozen=True)
class ChannelTrade:
    order_no: str
    status: TradeStatus
    amount_fen: int | None = None  # what the channel took (or will take); None when not found
    channel_trade_no: str | None = None
    paid_at: datetime | None = None
    currency: str = "CNY"
    raw_state: str = ""  # the channel's own word, for the inbox row and for people


@dataclass(frozen=True)
class PaymentOrderRef:
    """What a channel needs to start a payment for one of our orders."""

    order_no: str
    amount_fen: int
    description: str
    expires_at: datetime
    notify_url: str
    payer_ref: str | None = None  # channel-specific payer handle (withholding agreement, card account token)


@dataclass(frozen=True)
class PaymentStart:
    """How the payer completes the payment: a QR code to scan, a page to open, or nothing (charged at once)."""

    order_no: str
    method: str  # "qr_code", "redirect", "charged", "withholding"
    data: Mapping[str, str] = field(default_factory=dict)  # e.g. {"code_url": ...} or {"url": ...}


class CloseResult(StrEnum):
    CLOSED = "closed"  # the channel closed it (or it was already closed): no charge can follow
    NOT_FOUND = "not_found"  # the channel never had it: nothing can be charged under it
    ALREADY_PAID = "already_paid"  # too late: the payer paid; query it and mark it paid


@dataclass(frozen=True)
class RefundRequest:
    order_no: str
    refund_no: str
    amount_fen: int
    order_amount_fen: int
    reason: str
    notify_url: str


@dataclass(frozen=True)
class RefundStatus:
    refund_no: str
    outcome: RefundOutcome
    amount_fen: int
    channel_refund_no: str | None = None
    raw_state: str = ""


class LineKind(StrEnum):
    PAYMENT = "payment"
    REFUND = "refund"


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One money movement in a channel's daily statement."""

    line_no: int  # in the file, for the report
    kind: LineKind
    order_no: str
    channel_trade_no: str
    amount_fen: int  # always positive; `kind` says which way it went
    occurred_at: datetime
    refund_no: str | None = None
    channel_refund_no: str | None = None


class StatementError(ValueError):
    """A statement file that is not the channel's format, or whose totals do not add up: nothing is imported."""

    def __init__(self, line_no: int, message: str) -> None:
        super().__init__(f"line {line_no}: {message}")
        self.line_no = line_no


class ChannelUnavailable(Exception):
    """The channel's answer is unknown (network, timeout, 5xx, unverifiable response): retry later, query first."""


class ChannelDeclined(Exception):
    """The channel answered, signed, that it will not do it. `code` is the channel's own error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@runtime_checkable
class ChannelAdapter(Protocol):
    """One payment channel. Implementations: payments/channels/{wechatpay,alipay,bank,card}_adapter.py."""

    name: str

    def create_payment(self, order: PaymentOrderRef) -> PaymentStart: ...

    def query_payment(self, order_no: str) -> ChannelTrade: ...

    def close_payment(self, order_no: str) -> CloseResult: ...

    def refund(self, request: RefundRequest) -> RefundStatus: ...

    def query_refund(self, order_no: str, refund_no: str) -> RefundStatus: ...

    def read_callback(self, headers: Mapping[str, str], body: bytes, *, now: float) -> VerifiedCallback:
        """Verify and parse a callback; raises ChannelRefusal (nothing may be stored or acted on)."""
        ...

    def acknowledge(self, refusal: ChannelRefusal | None = None, *, failed: bool = False) -> Acknowledgement:
        """The answer the channel expects: success (no refusal, not failed), a refusal, or our own failure (the
        channel must retry)."""
        ...

    def fetch_statement(self, day: date) -> bytes: ...

    def parse_statement(self, data: Iterable[bytes]) -> Iterator[StatementLine]:
        """Lines of a statement file (an iterable of raw lines, so a million-line file streams); raises
        StatementError for a file that is not the channel's format or whose totals disagree."""
        ...
