"""The bank gateway wire format (docs/bank-gateway.md), checked against the document's literal layouts with ECDSA
from `cryptography` directly: signed headers, the past-only window, key rotation, strict JSON, callbacks,
acknowledgements, the daily statement and detached file signatures."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from keys.signed_messages import Signed
from payments.channels import bank
from payments.channels.base import LineKind, StatementError, StatementLine
from payments.channels.common import ChannelRefusal, RefusalReason

MERCHANT = "M100001"
NOW = 1_795_000_000
BANK_KEY = bank.SigningKey.generate("bank-2026")
NEXT_BANK_KEY = bank.SigningKey.generate("bank-2027")
OUR_KEY = bank.SigningKey.generate("sscard-1")
RING = bank.KeyRing.of((BANK_KEY.key_id, BANK_KEY.public_pem()), (NEXT_BANK_KEY.key_id, NEXT_BANK_KEY.public_pem()))
PAID: dict[str, Any] = {
    "type": "payment",
    "event_id": "BTRADE0001-PAID",
    "order_no": "P2026112800000001",
    "trade_no": "BTRADE0001",
    "status": "PAID",
    "amount_fen": 12000,
    "currency": "CNY",
    "paid_at": "2026-11-18T11:06:00Z",
}
REFUND: dict[str, Any] = {
    "type": "refund",
    "event_id": "BREF0001-SUCCEEDED",
    "order_no": "P2026112800000001",
    "refund_no": "R1",
    "bank_refund_no": "BREF0001",
    "status": "SUCCEEDED",
    "amount_fen": 100,
}


def notify(body: dict[str, Any] | bytes, *, key: bank.SigningKey = BANK_KEY, at: float = NOW) -> tuple[dict, bytes]:
    raw = body if isinstance(body, bytes) else bank.dumps(body)
    return bank.sign_headers(key, bank.NOTIFY, MERCHANT, raw, now=at), raw


def verify(headers: Any, raw: bytes, **changes: Any) -> Signed:
    args: dict[str, Any] = dict(purpose=bank.NOTIFY, keys=RING, account=MERCHANT, now=NOW) | changes
    return bank.verify_headers(headers, raw, **args)


def refused(reason: RefusalReason, call: Any, *args: Any, **kwargs: Any) -> ChannelRefusal:
    with pytest.raises(ChannelRefusal) as info:
        call(*args, **kwargs)
    assert info.value.reason is reason, info.value.message
    return info.value


# --- signatures ---------------------------------------------------------------------------------------------------


def test_signed_string_is_the_documented_layout() -> None:
    headers, raw = notify(PAID)
    literal = f"NOTIFY\n{MERCHANT}\n{NOW}\n{headers['Bank-Nonce']}\n".encode() + raw
    signature = base64.b64decode(headers["Bank-Signature"])
    BANK_KEY.private_key.public_key().verify(signature, literal, ec.ECDSA(hashes.SHA256()))  # raises if not
    assert headers["Bank-Key-Id"] == "bank-2026" and headers["Bank-Timestamp"] == str(NOW)
    assert headers["Bank-Merchant-Id"] == MERCHANT


def test_a_signature_made_by_hand_verifies() -> None:
    raw = b'{"a":1}'
    nonce = "n" * 16
    sig = BANK_KEY.private_key.sign(f"NOTIFY\n{MERCHANT}\n{NOW}\n{nonce}\n".encode() + raw, ec.ECDSA(hashes.SHA256()))
    headers = {
        "bank-merchant-id": MERCHANT,  # header names are case-insensitive
        "BANK-KEY-ID": "bank-2026",
        "Bank-Timestamp": str(NOW),
        "Bank-Nonce": nonce,
        "Bank-Signature": base64.b64encode(sig).decode(),
    }
    assert verify(headers, raw).nonce == nonce


def test_both_keys_of_a_rotation_verify_and_a_removed_one_does_not() -> None:
    for key in (BANK_KEY, NEXT_BANK_KEY):
        assert verify(*notify(PAID, key=key)).key_id == key.key_id
    only_next = bank.KeyRing.of((NEXT_BANK_KEY.key_id, NEXT_BANK_KEY.public_pem()))
    refused(RefusalReason.UNKNOWN_KEY, verify, *notify(PAID), keys=only_next)


def test_another_key_under_a_known_id_is_a_bad_signature() -> None:
    impostor = bank.SigningKey.generate("bank-2026")
    refused(RefusalReason.SIGNATURE, verify, *notify(PAID, key=impostor))


@pytest.mark.parametrize("field", ["Bank-Merchant-Id", "Bank-Timestamp", "Bank-Nonce"])
def test_every_signed_header_is_covered(field: str) -> None:
    headers, raw = notify(PAID)
    headers[field] = {"Bank-Merchant-Id": "M100002", "Bank-Timestamp": str(NOW - 1), "Bank-Nonce": "x" * 20}[field]
    refused(RefusalReason.SIGNATURE, verify, headers, raw)


def test_a_tampered_body_is_refused() -> None:
    headers, raw = notify(PAID)
    refused(RefusalReason.SIGNATURE, verify, headers, raw.replace(b"12000", b"12001"))


def test_a_signature_for_another_purpose_is_refused() -> None:
    raw = bank.dumps(PAID)
    headers = bank.sign_headers(BANK_KEY, bank.response_purpose("/gateway/v1/payments"), MERCHANT, raw, now=NOW)
    refused(RefusalReason.SIGNATURE, verify, headers, raw)


def test_another_merchant_signed_by_the_bank_is_a_mismatch() -> None:
    raw = bank.dumps(PAID)
    headers = bank.sign_headers(BANK_KEY, bank.NOTIFY, "M999999", raw, now=NOW)
    refused(RefusalReason.MISMATCH, verify, headers, raw)


@pytest.mark.parametrize(("offset", "ok"), [(0, True), (-300, True), (-301, False), (30, True), (31, False)])
def test_window_is_past_only(offset: int, ok: bool) -> None:
    headers, raw = notify(PAID, at=NOW + offset)
    if ok:
        verify(headers, raw)
    else:
        refused(RefusalReason.STALE, verify, headers, raw)


def test_a_response_must_echo_our_request_nonce() -> None:
    raw = b'{"code":"OK"}'
    purpose = bank.response_purpose("/gateway/v1/payments/query")
    headers = bank.sign_headers(BANK_KEY, purpose, MERCHANT, raw, now=NOW, nonce="a" * 32)
    verify(headers, raw, purpose=purpose, nonce="a" * 32)
    refused(RefusalReason.MISMATCH, verify, headers, raw, purpose=purpose, nonce="b" * 32)


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("Bank-Nonce", "short"),
        ("Bank-Nonce", "has space in it 123"),
        ("Bank-Nonce", "line\nbreak-0123456789"),
        ("Bank-Timestamp", "17950000.0"),
        ("Bank-Timestamp", "-1"),
        ("Bank-Key-Id", "bank 2026"),
        ("Bank-Merchant-Id", ""),
    ],
)
def test_malformed_headers_are_refused(change: str, value: str) -> None:
    headers, raw = notify(PAID)
    headers[change] = value
    refused(RefusalReason.MALFORMED, verify, headers, raw)


def test_missing_or_repeated_headers_are_refused() -> None:
    headers, raw = notify(PAID)
    for name in bank.HEADERS:
        refused(RefusalReason.MALFORMED, verify, {k: v for k, v in headers.items() if k != name}, raw)
    doubled = [*headers.items(), ("bank-nonce", headers["Bank-Nonce"])]

    class Multi(dict):  # type: ignore[type-arg]
        def getlist(self, name: str) -> list[str]:
            return [v for k, v in doubled if k.lower() == name.lower()]

    refused(RefusalReason.MALFORMED, verify, Multi(headers), raw)


def test_keys_must_be_p256() -> None:
    with pytest.raises(ValueError, match="P-256"):
        bank.SigningKey("k", ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ValueError, match="P-256"):
        bank.KeyRing.of(("k", ec.generate_private_key(ec.SECP384R1()).public_key()))
    assert "private_key" not in repr(OUR_KEY)


# --- callbacks --------------------------------------------------------------------------------------------------


def test_payment_notification() -> None:
    notice = bank.parse_notification(bank.dumps(PAID))
    assert isinstance(notice, bank.PaymentNotice)
    assert (notice.order_no, notice.trade_no, notice.status, notice.amount_fen) == (
        "P2026112800000001",
        "BTRADE0001",
        bank.PaymentState.PAID,
        12000,
    )
    assert notice.paid_at == datetime(2026, 11, 18, 11, 6, tzinfo=UTC)


def test_refund_notification() -> None:
    notice = bank.parse_notification(bank.dumps(REFUND))
    assert isinstance(notice, bank.RefundNotice)
    assert (notice.refund_no, notice.status, notice.amount_fen) == ("R1", bank.RefundState.SUCCEEDED, 100)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"amount_fen": 120.0}, RefusalReason.MALFORMED),
        ({"amount_fen": "12000"}, RefusalReason.MALFORMED),
        ({"amount_fen": True}, RefusalReason.MALFORMED),
        ({"amount_fen": 0}, RefusalReason.MALFORMED),
        ({"amount_fen": -5}, RefusalReason.MALFORMED),
        ({"amount_fen": 10**13}, RefusalReason.MALFORMED),
        ({"currency": "USD"}, RefusalReason.UNSUPPORTED),
        ({"status": "UNPAID"}, RefusalReason.UNSUPPORTED),
        ({"type": "chargeback"}, RefusalReason.UNSUPPORTED),
        ({"paid_at": None}, RefusalReason.MALFORMED),
        ({"paid_at": "2026-11-18 11:06:00"}, RefusalReason.MALFORMED),
        ({"paid_at": "2026-02-30T11:06:00Z"}, RefusalReason.MALFORMED),
        ({"order_no": "P|1"}, RefusalReason.MALFORMED),
        ({"event_id": ""}, RefusalReason.MALFORMED),
    ],
)
def test_bad_payment_notifications(change: dict[str, Any], reason: RefusalReason) -> None:
    body = {k: v for k, v in ({**PAID, **change}).items() if v is not None}
    refused(reason, bank.parse_notification, bank.dumps(body))


@pytest.mark.parametrize(
    "raw",
    [b'{"a":1,"a":2}', b'{"amount_fen": NaN}', b"[]", b"\xff\xfe", b"", b"{" * 5000, b" " * (bank.MAX_BODY + 1)],
)
def test_json_is_strict(raw: bytes) -> None:
    refused(RefusalReason.MALFORMED, bank.parse_notification, raw)


def test_acknowledgements() -> None:
    assert (bank.acknowledge_success().status, bank.acknowledge_success().body) == (200, b'{"code":"OK"}')
    sig = bank.acknowledge_refusal(ChannelRefusal(RefusalReason.SIGNATURE, "x"))
    assert sig.status == 401 and json.loads(sig.body) == {"code": "REFUSED", "reason": "signature"}
    stale = bank.acknowledge_refusal(ChannelRefusal(RefusalReason.STALE, "x"))
    assert stale.status == 400 and json.loads(stale.body)["reason"] == "stale"
    ours = bank.acknowledge_refusal(None)
    assert ours.status == 500 and ours.body == b'{"code":"RETRY"}'


# --- statement -----------------------------------------------------------------------------------------------------

DAY = date(2026, 11, 18)
AT = datetime(2026, 11, 18, 11, 6, tzinfo=UTC)
LINES = [
    StatementLine(2, LineKind.PAYMENT, "P1", "BT1", 12000, AT),
    StatementLine(3, LineKind.PAYMENT, "P2", "BT2", 300, AT),
    StatementLine(4, LineKind.REFUND, "P1", "BT1", 100, AT, "R1", "BR1"),
]
STATEMENT = (
    b"BANKSTMT|1|M100001|2026-11-18\n"
    b"P|P1|BT1|12000|2026-11-18T11:06:00Z\n"
    b"P|P2|BT2|300|2026-11-18T11:06:00Z\n"
    b"R|P1|BT1|100|2026-11-18T11:06:00Z|R1|BR1\n"
    b"END|2|12300|1|100\n"
)


def test_statement_renders_byte_exact_and_parses_back() -> None:
    assert bank.render_statement(MERCHANT, DAY, LINES) == STATEMENT
    parsed = list(bank.parse_statement(STATEMENT.splitlines(keepends=True), merchant=MERCHANT, day=DAY))
    assert parsed == LINES


def test_an_empty_day_is_a_header_and_a_zero_trailer() -> None:
    data = bank.render_statement(MERCHANT, DAY, [])
    assert data == b"BANKSTMT|1|M100001|2026-11-18\nEND|0|0|0|0\n"
    assert list(bank.parse_statement(data.splitlines(keepends=True))) == []


def test_statement_streams() -> None:
    def source() -> Any:
        yield b"BANKSTMT|1|M100001|2026-11-18\n"
        yield b"P|P1|BT1|12000|2026-11-18T11:06:00Z\n"
        raise AssertionError("read past the first line before it was asked for")

    assert next(bank.parse_statement(source())).order_no == "P1"


@pytest.mark.parametrize(
    ("data", "line_no", "message"),
    [
        (STATEMENT.replace(b"END|2|12300", b"END|2|12301"), 5, "disagree"),
        (STATEMENT.replace(b"END|2|12300|1|100\n", b""), 4, "cut short"),
        (STATEMENT + b"P|P3|BT3|1|2026-11-18T11:06:00Z\n", 6, "after the trailer"),
        (STATEMENT.replace(b"|300|", b"|0300|"), 3, "amount"),
        (STATEMENT.replace(b"|300|", b"|3.00|"), 3, "amount"),
        (STATEMENT.replace(b"T11:06:00Z\nR", b"T25:06:00Z\nR"), 3, "date and time"),
        (STATEMENT.replace(b"R|P1", b"X|P1"), 4, "expected"),
        (STATEMENT.replace(b"M100001", b"M100002"), 1, "another merchant"),
        (STATEMENT.replace(b"2026-11-18\n", b"2026-11-17\n", 1), 1, "date"),
        (STATEMENT.replace(b"BANKSTMT|1", b"BANKSTMT|2"), 1, "header"),
        (STATEMENT.replace(b"BT2", "BT\u00e92".encode()), 3, "ASCII"),
        (STATEMENT.replace(b"BT2", b"BT\x012"), 3, "control"),
        (b"", 0, "empty"),
    ],
)
def test_bad_statements_name_the_line(data: bytes, line_no: int, message: str) -> None:
    with pytest.raises(StatementError, match=message) as info:
        list(bank.parse_statement(data.splitlines(keepends=True), merchant=MERCHANT, day=DAY))
    assert info.value.line_no == line_no


# --- detached file signatures -----------------------------------------------------------------------------------------


def test_file_signature_round_trip_and_layout() -> None:
    data = b"WHRESULT|1|M100001|B1|0|0\nEND|0|0|0\n"
    sig = bank.sign_file(BANK_KEY, "WHRESULT", data)
    magic, version, kind, key_id, b64 = sig.decode().rstrip("\n").split("|")
    assert (magic, version, kind, key_id) == ("BANKSIG", "1", "WHRESULT", "bank-2026")
    BANK_KEY.private_key.public_key().verify(
        base64.b64decode(b64), b"FILE WHRESULT\n" + data, ec.ECDSA(hashes.SHA256())
    )
    assert bank.verify_file(RING, "WHRESULT", data, sig) == "bank-2026"
    refused(RefusalReason.SIGNATURE, bank.verify_file, RING, "WHRESULT", data + b"x", sig)
    refused(RefusalReason.MISMATCH, bank.verify_file, RING, "WHDEBIT", data, sig)
    refused(RefusalReason.MALFORMED, bank.verify_file, RING, "WHRESULT", data, b"BANKSIG|1|WHRESULT\n")
    refused(
        RefusalReason.UNKNOWN_KEY, bank.verify_file, RING, "WHRESULT", data, bank.sign_file(OUR_KEY, "WHRESULT", data)
    )
