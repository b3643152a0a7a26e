"""A bank that speaks the gateway of docs/bank-gateway.md, for tests and demonstrations: it verifies our signatures,
signs its answers and callbacks, keeps accounts with balances (so a debit can really fail for want of funds),
card-linked accounts and withholding agreements, and turns a debit file into a signed result file.

Driven from tests (`pay`, `fail`, `settle_refunds`, `result_file`, ...) and faulted on request (`faults`): 5xx
answers, timeouts, unsigned or wrongly signed answers, callbacks dropped, doubled, held and released out of order,
signed with the wrong key, stale or for another amount, statements with extra, missing or wrong lines, result files
with a line altered after signing.

Run alone: `python -m payments.sandbox.bank --port 18120` (prints its key and our test key as PEM to stderr).
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from payments.channels import bank
from payments.channels.base import LineKind, StatementLine
from payments.channels.common import ChannelRefusal
from payments.withholding import files

log = logging.getLogger("sscard.sandbox.bank")

Sender = Callable[[str, dict[str, str], bytes], int]  # url, headers, body -> HTTP status


@dataclass
class Faults:
    http_status: int | None = None  # every gateway call answers this status, unsigned
    timeout: bool = False  # every gateway call times out (raised into an in-process client)
    system_error: bool = False  # signed SYSTEM_ERROR answers
    unsigned: bool = False  # answers without signature headers
    wrong_key: bool = False  # answers signed by a key we do not know
    other_amount: bool = False  # answers report another amount than asked
    callback: str | None = None  # "drop", "twice", "bad_signature", "stale", "other_amount"
    hold_callbacks: bool = False  # keep callbacks until release_callbacks()
    statement: str | None = None  # "extra", "missing", "wrong_amount"
    result_tamper: bool = False  # alter a line of the result file after signing it


@dataclass
class Account:
    balance_fen: int
    closed: bool = False
    frozen: bool = False


@dataclass
class Payment:
    order_no: str
    amount_fen: int
    notify_url: str
    mode: str
    trade_no: str
    status: bank.PaymentState = bank.PaymentState.UNPAID
    paid_at: datetime | None = None
    refunded_fen: int = 0


@dataclass
class Refund:
    refund_no: str
    order_no: str
    amount_fen: int
    notify_url: str
    bank_refund_no: str
    status: bank.RefundState = bank.RefundState.PROCESSING
    settled_at: datetime | None = None


@dataclass
class Agreement:
    account: str
    active: bool = True


@dataclass
class Debit:
    order_no: str
    amount_fen: int
    status: bank.PaymentState
    trade_no: str = ""
    code: str = ""
    paid_at: datetime | None = None


def _default_sender(url: str, headers: dict[str, str], body: bytes) -> int:
    return httpx.post(url, content=body, headers=headers, timeout=10).status_code


@dataclass
class BankSandbox:
    merchant_id: str
    merchant_keys: bank.KeyRing  # our public keys, as registered with the bank
    bank_key: bank.SigningKey = field(default_factory=lambda: bank.SigningKey.generate("bank-2026"))
    clock: Callable[[], float] = time.time
    sender: Sender = _default_sender
    faults: Faults = field(default_factory=Faults)
    default_account: str = "payer"  # the account online-banking payments are taken from

    def __post_init__(self) -> None:
        self.accounts: dict[str, Account] = {self.default_account: Account(10**9)}
        self.cards: dict[str, str] = {}
        self.agreements: dict[str, Agreement] = {}
        self.payments: dict[str, Payment] = {}
        self.refunds: dict[str, Refund] = {}
        self.debits: dict[str, Debit] = {}
        self.held: list[tuple[str, dict[str, str], bytes]] = []
        self.sent: list[tuple[str, int]] = []  # (url, status) of every callback delivered
        self._nonces: set[str] = set()
        self._lock = threading.Lock()
        self._wrong_key = bank.SigningKey.generate(self.bank_key.key_id)
        self.app = self._build_app()

    # --- the bank's books -------------------------------------------------------------------------------------

    def open_account(self, account: str, balance_fen: int) -> None:
        self.accounts[account] = Account(balance_fen)

    def link_card(self, card_no: str, account: str) -> None:
        self.cards[card_no] = account

    def add_agreement(self, agreement_no: str, account: str) -> None:
        self.agreements[agreement_no] = Agreement(account)

    def revoke_agreement(self, agreement_no: str) -> None:
        self.agreements[agreement_no].active = False

    def _now(self) -> datetime:
        return datetime.fromtimestamp(int(self.clock()), UTC)

    def _debit(self, account: str | None, amount_fen: int) -> str | None:
        """Take money from an account; the refusal code, or None when taken."""
        acct = self.accounts.get(account or "")
        if acct is None:
            return "ACCOUNT_ABSENT"
        if acct.closed:
            return "ACCOUNT_CLOSED"
        if acct.frozen:
            return "ACCOUNT_FROZEN"
        if acct.balance_fen < amount_fen:
            return "INSUFFICIENT_FUNDS"
        acct.balance_fen -= amount_fen
        return None

    # --- driver methods ---------------------------------------------------------------------------------------

    def pay(self, order_no: str, account: str | None = None) -> str:
        """The payer confirms on the bank's page: the account is debited and the callback sent. Returns the
        payment's status, or the refusal code (nothing changes then)."""
        with self._lock:
            payment = self.payments[order_no]
            if payment.status is not bank.PaymentState.UNPAID:
                return payment.status.value
            refused = self._debit(account or self.default_account, payment.amount_fen)
            if refused:
                return refused
            payment.status, payment.paid_at = bank.PaymentState.PAID, self._now()
        self._notify_payment(payment)
        return payment.status.value

    def fail(self, order_no: str) -> None:
        with self._lock:
            payment = self.payments[order_no]
            payment.status = bank.PaymentState.FAILED
        self._notify_payment(payment)

    def settle_refunds(self, *, succeed: bool = True) -> list[str]:
        """Finish every refund in progress (money back to the payer) and call back; returns their numbers."""
        done = []
        with self._lock:
            for refund in self.refunds.values():
                if refund.status is bank.RefundState.PROCESSING:
                    refund.status = bank.RefundState.SUCCEEDED if succeed else bank.RefundState.FAILED
                    refund.settled_at = self._now()
                    if not succeed:
                        self.payments[refund.order_no].refunded_fen -= refund.amount_fen
                    done.append(refund)
        for refund in done:
            self._send(refund.notify_url, self._refund_body(refund))
        return [r.refund_no for r in done]

    def release_callbacks(self, *, reverse: bool = False) -> int:
        held, self.held = self.held, []
        for url, headers, body in reversed(held) if reverse else held:
            self.sent.append((url, self.sender(url, headers, body)))
        return len(held)

    def receive_debit_file(self, data: bytes, signature: bytes) -> files.DebitFile:
        """The bank takes in a debit file: our signature verified, every line PROCESSING until results."""
        bank.verify_file(self.merchant_keys, files.DEBIT, data, signature)
        debit = files.parse_debit(data)
        if debit.merchant != self.merchant_id:
            raise ValueError("debit file of another merchant")
        with self._lock:
            for line in debit.lines:
                self.debits.setdefault(
                    line.order_no, Debit(line.order_no, line.amount_fen, bank.PaymentState.PROCESSING)
                )
        return debit

    def result_file(self, data: bytes, signature: bytes) -> tuple[bytes, bytes]:
        """Process a debit file: each line debits the agreement's account or fails with its code. Returns the
        signed result file and its detached signature."""
        debit = self.receive_debit_file(data, signature)
        lines = []
        with self._lock:
            for line in debit.lines:
                state = self.debits[line.order_no]
                if state.status is bank.PaymentState.PROCESSING:
                    agreement = self.agreements.get(line.agreement_no)
                    if agreement is None:
                        refused: str | None = "AGREEMENT_ABSENT"
                    elif not agreement.active:
                        refused = "AGREEMENT_REVOKED"
                    else:
                        refused = self._debit(agreement.account, line.amount_fen)
                        if refused == "ACCOUNT_ABSENT":
                            refused = "ACCOUNT_CLOSED"
                    if refused is None:
                        state.status, state.trade_no, state.paid_at = bank.PaymentState.PAID, _trade_no(), self._now()
                        state.code = files.ResultCode.SUCCESS.value
                    else:
                        state.status, state.code = bank.PaymentState.FAILED, refused
                code = files.ResultCode(state.code)
                lines.append(files.ResultLine(line.seq, line.order_no, line.amount_fen, code, state.trade_no))
        result = files.write_result(files.ResultFile(self.merchant_id, debit.batch_no, tuple(lines)))
        sig = bank.sign_file(self.bank_key, files.RESULT, result)
        if self.faults.result_tamper and lines:
            first = lines[0]
            altered = files.ResultLine(first.seq, first.order_no, first.amount_fen + 1, first.code, first.bank_trade_no)
            raw = files.write_result(files.ResultFile(self.merchant_id, debit.batch_no, (altered, *lines[1:])))
            result = raw  # the signature stays the original's
        return result, sig

    def statement(self, day: date) -> bytes:
        lines: list[StatementLine] = []
        for payment in self.payments.values():
            # A refunded withholding debit also has a payment record here; its P line comes from the debits below.
            if payment.mode != "withholding" and payment.paid_at is not None and payment.paid_at.date() == day:
                lines.append(
                    StatementLine(
                        0, LineKind.PAYMENT, payment.order_no, payment.trade_no, payment.amount_fen, payment.paid_at
                    )
                )
        for debit in self.debits.values():
            if debit.paid_at is not None and debit.paid_at.date() == day:
                lines.append(
                    StatementLine(0, LineKind.PAYMENT, debit.order_no, debit.trade_no, debit.amount_fen, debit.paid_at)
                )
        for refund in self.refunds.values():
            if refund.status is bank.RefundState.SUCCEEDED and refund.settled_at and refund.settled_at.date() == day:
                trade_no = self.payments[refund.order_no].trade_no
                lines.append(
                    StatementLine(
                        0,
                        LineKind.REFUND,
                        refund.order_no,
                        trade_no,
                        refund.amount_fen,
                        refund.settled_at,
                        refund.refund_no,
                        refund.bank_refund_no,
                    )
                )
        fault = self.faults.statement
        if fault == "extra":
            lines.append(StatementLine(0, LineKind.PAYMENT, "NOSUCHORDER", _trade_no(), 100, self._now()))
        elif fault == "missing" and lines:
            lines.pop(0)
        elif fault == "wrong_amount" and lines:
            first = lines[0]
            lines[0] = StatementLine(
                0,
                first.kind,
                first.order_no,
                first.channel_trade_no,
                first.amount_fen + 1,
                first.occurred_at,
                first.refund_no,
                first.channel_refund_no,
            )
        return bank.render_statement(self.merchant_id, day, lines)

    # --- callbacks --------------------------------------------------------------------------------------------

    def _payment_body(self, payment: Payment) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "payment",
            "event_id": f"{payment.trade_no}-{payment.status.value}",
            "order_no": payment.order_no,
            "trade_no": payment.trade_no,
            "status": payment.status.value,
            "amount_fen": payment.amount_fen + (1 if self.faults.callback == "other_amount" else 0),
            "currency": "CNY",
        }
        if payment.paid_at is not None:
            body["paid_at"] = bank.format_time(payment.paid_at)
        return body

    def _refund_body(self, refund: Refund) -> dict[str, Any]:
        return {
            "type": "refund",
            "event_id": f"{refund.bank_refund_no}-{refund.status.value}",
            "order_no": refund.order_no,
            "refund_no": refund.refund_no,
            "bank_refund_no": refund.bank_refund_no,
            "status": refund.status.value,
            "amount_fen": refund.amount_fen,
        }

    def _notify_payment(self, payment: Payment) -> None:
        if payment.notify_url:
            self._send(payment.notify_url, self._payment_body(payment))

    def signed_callback(self, body: dict[str, Any], *, at: float | None = None) -> tuple[dict[str, str], bytes]:
        raw = bank.dumps(body)
        key = self._wrong_key if self.faults.callback == "bad_signature" else self.bank_key
        now = self.clock() if at is None else at
        if self.faults.callback == "stale":
            now -= 3600
        headers = bank.sign_headers(key, bank.NOTIFY, self.merchant_id, raw, now=now)
        return headers | {"Content-Type": "application/json"}, raw

    def _send(self, url: str, body: dict[str, Any]) -> None:
        fault = self.faults.callback
        if fault == "drop":
            return
        headers, raw = self.signed_callback(body)
        if self.faults.hold_callbacks:
            self.held.append((url, headers, raw))
            return
        for _ in range(2 if fault == "twice" else 1):
            self.sent.append((url, self.sender(url, headers, raw)))

    # --- the gateway ------------------------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="bank gateway sandbox")
        routes: dict[str, Callable[[dict[str, Any]], dict[str, Any] | bytes]] = {
            "/gateway/v1/payments": self._create,
            "/gateway/v1/payments/query": self._query,
            "/gateway/v1/payments/close": self._close,
            "/gateway/v1/refunds": self._refund,
            "/gateway/v1/refunds/query": self._refund_query,
            "/gateway/v1/statements": self._statement,
            "/gateway/v1/withholding/query": self._withholding_query,
        }
        for path, handler in routes.items():
            app.add_api_route(path, self._endpoint(path, handler), methods=["POST"], response_class=Response)
        return app

    def _endpoint(self, path: str, handler: Callable[[dict[str, Any]], dict[str, Any] | bytes]) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            faults = self.faults
            if faults.timeout:
                raise httpx.ReadTimeout("sandbox: simulated timeout")
            if faults.http_status is not None:
                return Response(b"upstream error", status_code=faults.http_status)
            nonce = request.headers.get(bank.H_NONCE, "")
            try:
                verified = bank.verify_headers(
                    request.headers,
                    body,
                    purpose=bank.request_purpose(path),
                    keys=self.merchant_keys,
                    account=self.merchant_id,
                    now=self.clock(),
                )
                with self._lock:
                    if verified.nonce in self._nonces:
                        raise ChannelRefusal(bank.RefusalReason.STALE, "nonce already used")
                    self._nonces.add(verified.nonce)
                payload = bank.loads(body)
            except ChannelRefusal as refusal:
                answer: dict[str, Any] | bytes = _error("REQUEST_REFUSED", f"{refusal.reason}: {refusal.message}")
                if not bank.NONCE.fullmatch(nonce):
                    return Response(b"bad request", status_code=400)
            else:
                if faults.system_error:
                    answer = _error("SYSTEM_ERROR", "try again later")
                else:
                    try:
                        # Off the event loop: a card charge sends its callback before answering.
                        answer = await run_in_threadpool(handler, payload)
                    except _Declined as exc:
                        answer = _error(exc.code, exc.message)
                    except ChannelRefusal as refusal:  # a field of the request missing or malformed
                        answer = _error("INVALID_REQUEST", refusal.message)
            if isinstance(answer, bytes):
                raw, media = answer, "text/plain"
            else:
                if faults.other_amount and "amount_fen" in answer:
                    answer = answer | {"amount_fen": answer["amount_fen"] + 1}
                raw, media = bank.dumps(answer), "application/json"
            key = self._wrong_key if faults.wrong_key else self.bank_key
            headers = (
                {}
                if faults.unsigned
                else bank.sign_headers(
                    key, bank.response_purpose(path), self.merchant_id, raw, now=self.clock(), nonce=nonce
                )
            )
            return Response(raw, media_type=media, headers=headers)

        return endpoint

    def _create(self, req: dict[str, Any]) -> dict[str, Any]:
        order_no, amount = bank.text(req, "order_no"), bank.fen(req, "amount_fen")
        mode = req.get("mode")
        if mode not in ("redirect", "card") or req.get("currency") != "CNY":
            raise _Declined("INVALID_REQUEST", "mode or currency")
        notify_url = req.get("notify_url") if isinstance(req.get("notify_url"), str) else ""
        charged = False
        with self._lock:
            existing = self.payments.get(order_no)
            if existing is not None:
                if existing.amount_fen != amount or existing.mode != mode:
                    raise _Declined("DUPLICATE_ORDER", "order number used with other terms")
                payment = existing  # a retry of the same request: the same answer, never a second charge
            else:
                payment = Payment(order_no, amount, notify_url, mode, _trade_no())
                if mode == "card":
                    card_no = req.get("card_no")
                    account = self.cards.get(card_no) if isinstance(card_no, str) else None
                    if account is None:
                        raise _Declined("CARD_ACCOUNT_ABSENT", "no account linked to the card")
                    refused = self._debit(account, amount)
                    if refused:
                        raise _Declined(refused, "the card account was not charged")
                    payment.status, payment.paid_at = bank.PaymentState.PAID, self._now()
                    charged = True
                self.payments[order_no] = payment
        if charged:
            # Like any payment, a card charge is also notified: the synchronous answer may be lost on the way.
            self._notify_payment(payment)
        answer = self._payment_answer(payment)
        if mode == "redirect":
            answer["pay_url"] = f"https://bank.example/pay/{payment.trade_no}"
        return answer

    def _payment_answer(self, payment: Payment) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "code": "OK",
            "order_no": payment.order_no,
            "trade_no": payment.trade_no,
            "status": payment.status.value,
            "amount_fen": payment.amount_fen,
        }
        if payment.paid_at is not None:
            answer["paid_at"] = bank.format_time(payment.paid_at)
        return answer

    def _query(self, req: dict[str, Any]) -> dict[str, Any]:
        order_no = bank.text(req, "order_no")
        payment = self.payments.get(order_no)
        if payment is None:
            return {"code": "OK", "order_no": order_no, "status": bank.PaymentState.NOT_FOUND.value}
        return self._payment_answer(payment)

    def _close(self, req: dict[str, Any]) -> dict[str, Any]:
        order_no = bank.text(req, "order_no")
        with self._lock:
            payment = self.payments.get(order_no)
            if payment is None:
                return {"code": "OK", "order_no": order_no, "status": bank.PaymentState.NOT_FOUND.value}
            if payment.status is bank.PaymentState.UNPAID:
                payment.status = bank.PaymentState.CLOSED
        return self._payment_answer(payment)

    def _refund(self, req: dict[str, Any]) -> dict[str, Any]:
        order_no, refund_no = bank.text(req, "order_no"), bank.text(req, "refund_no")
        amount = bank.fen(req, "amount_fen")
        with self._lock:
            existing = self.refunds.get(refund_no)
            if existing is not None:
                if existing.order_no != order_no or existing.amount_fen != amount:
                    raise _Declined("DUPLICATE_REFUND", "refund number used with other terms")
                return self._refund_answer(existing)
            payment = self.payments.get(order_no)
            debit = self.debits.get(order_no)
            if payment is None and debit is not None and debit.status is bank.PaymentState.PAID:
                # A withholding debit is refunded like any payment from here on.
                payment = Payment(
                    order_no, debit.amount_fen, "", "withholding", debit.trade_no, bank.PaymentState.PAID, debit.paid_at
                )
                self.payments[order_no] = payment
            if payment is None or payment.status is not bank.PaymentState.PAID:
                raise _Declined("ORDER_NOT_PAID", "only a paid order can be refunded")
            if amount > payment.amount_fen - payment.refunded_fen:
                raise _Declined("REFUND_EXCEEDS", "more than is left to refund")
            payment.refunded_fen += amount
            notify = req.get("notify_url") if isinstance(req.get("notify_url"), str) else ""
            refund = Refund(refund_no, order_no, amount, notify, _trade_no())
            self.refunds[refund_no] = refund
        return self._refund_answer(refund)

    def _refund_answer(self, refund: Refund) -> dict[str, Any]:
        return {
            "code": "OK",
            "order_no": refund.order_no,
            "refund_no": refund.refund_no,
            "bank_refund_no": refund.bank_refund_no,
            "status": refund.status.value,
            "amount_fen": refund.amount_fen,
        }

    def _refund_query(self, req: dict[str, Any]) -> dict[str, Any]:
        order_no, refund_no = bank.text(req, "order_no"), bank.text(req, "refund_no")
        refund = self.refunds.get(refund_no)
        if refund is None or refund.order_no != order_no:
            raise _Declined("REFUND_NOT_FOUND", "no such refund")
        return self._refund_answer(refund)

    def _statement(self, req: dict[str, Any]) -> bytes:
        try:
            day = date.fromisoformat(req.get("date") or "")
        except (TypeError, ValueError):
            raise _Declined("INVALID_REQUEST", "date must be YYYY-MM-DD") from None
        if day >= self._now().date():
            raise _Declined("STATEMENT_NOT_READY", "statements are for days that have ended")
        return self.statement(day)

    def _withholding_query(self, req: dict[str, Any]) -> dict[str, Any]:
        order_no = bank.text(req, "order_no")
        debit = self.debits.get(order_no)
        if debit is None:
            return {"code": "OK", "order_no": order_no, "status": bank.PaymentState.NOT_FOUND.value}
        answer: dict[str, Any] = {
            "code": "OK",
            "order_no": order_no,
            "status": debit.status.value,
            "amount_fen": debit.amount_fen,
            "result_code": debit.code,
        }
        if debit.trade_no:
            answer["trade_no"] = debit.trade_no
        if debit.paid_at is not None:
            answer["paid_at"] = bank.format_time(debit.paid_at)
        return answer


class _Declined(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code)
        self.code, self.message = code, message


def _error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


def _trade_no() -> str:
    return "B" + secrets.token_hex(12).upper()


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m payments.sandbox.bank", description=__doc__)
    parser.add_argument("--port", type=int, default=18120)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--merchant-id", default="M100001")
    parser.add_argument("--merchant-key", metavar="PEM", help="our public key (default: a generated pair, printed)")
    parser.add_argument("--merchant-key-id", default="sscard-1")
    args = parser.parse_args(argv)
    if args.merchant_key:
        with open(args.merchant_key, "rb") as f:
            keys = bank.KeyRing.of((args.merchant_key_id, f.read()))
    else:
        ours = bank.SigningKey.generate(args.merchant_key_id)
        keys = bank.KeyRing.of((ours.key_id, ours.private_key.public_key()))
        from cryptography.hazmat.primitives import serialization

        pem = ours.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        sys.stderr.write(f"merchant test key ({ours.key_id}), for the client side only:\n{pem.decode()}")
    sandbox = BankSandbox(args.merchant_id, keys)
    sys.stderr.write(f"bank public key ({sandbox.bank_key.key_id}):\n{sandbox.bank_key.public_pem().decode()}")
    uvicorn.run(sandbox.app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
