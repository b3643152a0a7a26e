"""Fuzz every bank parser: whatever arrives, only the documented exception may come out (ChannelRefusal for
messages and signatures, StatementError for statements, FileError for the withholding files)."""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from payments.channels import bank
from payments.channels.bank_adapter import BankAdapter, BankConfig
from payments.channels.base import StatementError
from payments.channels.common import ChannelRefusal
from payments.withholding import files
from tests.unit.payments_channels.test_bank import BANK_KEY, MERCHANT, NOW, OUR_KEY, PAID, REFUND, RING, STATEMENT
from tests.unit.payments_channels.test_bank_files import DEBIT_BYTES, RESULT_BYTES

FUZZ = settings(max_examples=300, deadline=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)


def _mutate(data: bytes, position: int, insert: bytes, cut: int) -> bytes:
    position %= len(data) + 1
    return data[:position] + insert + data[position + cut :]


@FUZZ
@given(st.binary(max_size=400))
def test_notification_bytes(raw: bytes) -> None:
    with contextlib.suppress(ChannelRefusal):
        bank.parse_notification(raw)


@FUZZ
@given(st.sampled_from([PAID, REFUND]), st.sampled_from([*PAID, *REFUND]), json_values)
def test_notification_with_any_field_replaced(good: dict[str, Any], name: str, value: Any) -> None:
    with contextlib.suppress(ChannelRefusal):
        bank.parse_notification(bank.dumps({**good, name: value}))


@FUZZ
@given(
    st.dictionaries(st.sampled_from([*bank.HEADERS, "Other"]), st.text(max_size=80), max_size=6), st.binary(max_size=80)
)
def test_headers(headers: dict[str, str], raw: bytes) -> None:
    with contextlib.suppress(ChannelRefusal):
        bank.verify_headers(headers, raw, purpose=bank.NOTIFY, keys=RING, account=MERCHANT, now=NOW)


@FUZZ
@given(st.sampled_from(bank.HEADERS), st.text(max_size=100))
def test_signed_headers_with_one_replaced(name: str, value: str) -> None:
    raw = bank.dumps(PAID)
    headers = bank.sign_headers(BANK_KEY, bank.NOTIFY, MERCHANT, raw, now=NOW) | {name: value}
    with contextlib.suppress(ChannelRefusal):
        bank.verify_headers(headers, raw, purpose=bank.NOTIFY, keys=RING, account=MERCHANT, now=NOW)


@FUZZ
@given(st.lists(st.binary(max_size=80), max_size=8))
def test_statement_lines(lines: list[bytes]) -> None:
    with contextlib.suppress(StatementError):
        list(bank.parse_statement(lines, merchant=MERCHANT))


@FUZZ
@given(st.integers(0, 400), st.binary(max_size=12), st.integers(0, 6))
def test_statement_mutated(position: int, insert: bytes, cut: int) -> None:
    data = _mutate(STATEMENT, position, insert, cut)
    with contextlib.suppress(StatementError):
        list(bank.parse_statement(data.splitlines(keepends=True)))


@FUZZ
@given(st.binary(max_size=300))
def test_result_file_bytes(data: bytes) -> None:
    with contextlib.suppress(files.FileError):
        files.parse_result(data)
    with contextlib.suppress(files.FileError):
        files.parse_debit(data)


@FUZZ
@given(st.integers(0, 200), st.binary(max_size=12), st.integers(0, 6))
def test_files_mutated(position: int, insert: bytes, cut: int) -> None:
    with contextlib.suppress(files.FileError):
        files.parse_result(_mutate(RESULT_BYTES, position, insert, cut))
    with contextlib.suppress(files.FileError):
        files.parse_debit(_mutate(DEBIT_BYTES, position, insert, cut))


@FUZZ
@given(st.binary(max_size=200), st.binary(max_size=40))
def test_file_signature(signature: bytes, data: bytes) -> None:
    with contextlib.suppress(ChannelRefusal):
        bank.verify_file(RING, files.RESULT, data, signature)
    good = bank.sign_file(BANK_KEY, files.RESULT, RESULT_BYTES)
    with contextlib.suppress(ChannelRefusal):
        bank.verify_file(RING, files.RESULT, RESULT_BYTES, _mutate(good, len(signature), data[:4], 2))


_ADAPTER = BankAdapter(BankConfig(MERCHANT, OUR_KEY, RING), httpx.Client())


@FUZZ
@given(st.sampled_from([PAID, REFUND]), st.sampled_from([*PAID, *REFUND]), json_values)
def test_adapter_reads_any_signed_body(good: dict[str, Any], name: str, value: Any) -> None:
    """Signed by the bank and still nonsense: refused, never another exception."""
    raw = bank.dumps({**good, name: value})
    headers = bank.sign_headers(BANK_KEY, bank.NOTIFY, MERCHANT, raw, now=NOW)
    with contextlib.suppress(ChannelRefusal):
        verified = _ADAPTER.read_callback(headers, raw, now=NOW)
        assert verified.nonce == headers["Bank-Nonce"] and verified.nonce_ttl > 300
