"""keys/signed_messages.py, the ECDSA-signed message recipe the bank gateway and the liveness vendor spell their own
way: the signed layout, each refusal reason, rotation with two keys, the window edges, the caller's own exception,
strict JSON, and fuzzed inputs raising nothing but the documented refusal."""

from __future__ import annotations

import base64
import contextlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from authsvc.liveness import wire
from authsvc.liveness.vendor import CallbackRejected, RejectReason
from keys.signed_messages import (
    KeyRing,
    Peer,
    Reason,
    Refused,
    Scheme,
    Signed,
    SigningKey,
    format_time,
    request_purpose,
    response_purpose,
)
from payments.channels import bank
from payments.channels.common import ChannelRefusal, RefusalReason

NOW = 1_796_000_000.0
ACCOUNT = "acct-1"
PURPOSE = request_purpose("/v1/things")
SCHEME = Scheme("Test", "Account-Id", max_body=1024, max_age=60, max_ahead=10)
H_ACCOUNT, H_KEY_ID, H_TIMESTAMP, H_NONCE, H_SIGNATURE = SCHEME.headers
KEY = SigningKey.generate("them-1")
NEXT = SigningKey.generate("them-2")
RING = KeyRing.of((KEY.key_id, KEY.public_pem()))
BODY = b'{"a":1}'


def signed(body: bytes = BODY, *, key: SigningKey = KEY, at: float = NOW, **kwargs: Any) -> dict[str, str]:
    return SCHEME.sign_headers(key, PURPOSE, kwargs.pop("account", ACCOUNT), body, now=at, **kwargs)


def verify(headers: Any, body: bytes = BODY, **changes: Any) -> Signed:
    args: dict[str, Any] = {"purpose": PURPOSE, "keys": RING, "account": ACCOUNT, "now": NOW, **changes}
    return SCHEME.verify_headers(headers, body, **args)


def reason(headers: Any, body: bytes = BODY, **changes: Any) -> Reason:
    with pytest.raises(Refused) as caught:
        verify(headers, body, **changes)
    assert str(caught.value) == caught.value.message
    return caught.value.reason


def test_sign_then_verify_gives_back_what_the_headers_said() -> None:
    headers = signed()
    assert set(headers) == {"Test-Account-Id", "Test-Key-Id", "Test-Timestamp", "Test-Nonce", "Test-Signature"}
    assert verify(headers) == Signed(ACCOUNT, "them-1", int(NOW), headers[H_NONCE])
    assert signed()[H_NONCE] != headers[H_NONCE]  # a fresh nonce each message


def test_the_signature_is_over_the_documented_layout() -> None:
    headers = signed(nonce="n" * 32)
    literal = f"REQUEST /v1/things\n{ACCOUNT}\n{int(NOW)}\n{'n' * 32}\n".encode() + BODY
    signature = base64.b64decode(headers[H_SIGNATURE])
    KEY.private_key.public_key().verify(signature, literal, ec.ECDSA(hashes.SHA256()))  # raises if not


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda h: {k: v for k, v in h.items() if k != H_NONCE}, Reason.MALFORMED),
        (lambda h: {**h, H_TIMESTAMP: "-5"}, Reason.MALFORMED),
        (lambda h: {**h, H_TIMESTAMP: "0123"}, Reason.MALFORMED),
        (lambda h: {**h, H_NONCE: "short"}, Reason.MALFORMED),
        (lambda h: {**h, H_ACCOUNT: "acct\n1"}, Reason.MALFORMED),
        (lambda h: {**h, H_KEY_ID: ""}, Reason.MALFORMED),
        (lambda h: httpx.Headers([*h.items(), (H_KEY_ID, "them-2")]), Reason.MALFORMED),  # a header twice
        (lambda h: {**h, H_SIGNATURE: "not base64!"}, Reason.SIGNATURE),
        (lambda h: {**h, H_SIGNATURE: "AAAA"}, Reason.SIGNATURE),
        (lambda h: {**h, H_SIGNATURE: "签名"}, Reason.SIGNATURE),
        (lambda h: {**h, H_NONCE: "f" * 32}, Reason.SIGNATURE),  # every header field is signed
        (lambda h: {**h, H_TIMESTAMP: str(int(NOW) - 1)}, Reason.SIGNATURE),
        (lambda h: {**h, H_ACCOUNT: "acct-2"}, Reason.SIGNATURE),
        (lambda h: {**h, H_KEY_ID: "them-9"}, Reason.UNKNOWN_KEY),
    ],
)
def test_each_header_fault_has_its_reason(change: Any, expected: Reason) -> None:
    assert reason(change(signed())) is expected


def test_the_body_purpose_and_key_are_all_covered() -> None:
    assert reason(signed(), BODY + b" ") is Reason.SIGNATURE
    assert reason(signed(), purpose=request_purpose("/v1/other")) is Reason.SIGNATURE
    assert reason(signed(key=SigningKey.generate("them-1"))) is Reason.SIGNATURE  # right id, another key
    assert reason(signed(key=NEXT)) is Reason.UNKNOWN_KEY
    assert reason(signed(b"x" * 1025), b"x" * 1025) is Reason.MALFORMED  # too large, before any cryptography


def test_account_and_nonce_mismatches_come_after_the_signature() -> None:
    assert reason(signed(account="acct-2")) is Reason.MISMATCH
    assert reason(signed(nonce="a" * 32), nonce="b" * 32) is Reason.MISMATCH
    assert verify(signed(nonce="a" * 32), nonce="a" * 32).nonce == "a" * 32
    # Forged for another account: the forger learns only that the signature failed.
    forged = signed(account="acct-2", key=SigningKey.generate("them-1"))
    assert reason(forged) is Reason.SIGNATURE


@pytest.mark.parametrize(("offset", "ok"), [(0, True), (-60, True), (-61, False), (10, True), (11, False)])
def test_the_default_window_is_past_only(offset: int, ok: bool) -> None:
    if ok:
        assert verify(signed(at=NOW + offset)).timestamp == int(NOW + offset)
    else:
        assert reason(signed(at=NOW + offset)) is Reason.STALE


def test_a_caller_window_overrides_the_default() -> None:
    assert reason(signed(at=NOW - 30), max_age=29) is Reason.STALE
    assert verify(signed(at=NOW + 20), max_ahead=20).timestamp == int(NOW) + 20
    assert reason(signed(at=NOW + 1), max_ahead=0) is Reason.STALE


def test_two_keys_in_a_ring_both_verify_during_a_rotation() -> None:
    both = KeyRing.of((KEY.key_id, KEY.public_pem()), (NEXT.key_id, NEXT.private_key.public_key()))
    assert [verify(signed(key=k), keys=both).key_id for k in (KEY, NEXT)] == ["them-1", "them-2"]
    only_next = KeyRing.of((NEXT.key_id, NEXT.public_pem()))
    assert reason(signed(key=KEY), keys=only_next) is Reason.UNKNOWN_KEY
    assert reason(signed(key=KEY), keys=KeyRing({})) is Reason.UNKNOWN_KEY


def test_keys_must_be_p256_with_a_plain_key_id() -> None:
    with pytest.raises(ValueError, match="P-256"):
        SigningKey("k", ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ValueError, match="key id"):
        SigningKey("k 1", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ValueError, match="P-256"):
        KeyRing.of(("k", ec.generate_private_key(ec.SECP384R1()).public_key()))
    again = SigningKey.from_pem("them-1", KEY.private_pem())
    assert verify(signed(key=again)).key_id == "them-1"


def test_the_callers_exception_comes_out_with_its_own_reason() -> None:
    # The two spellings in use: the bank raises ChannelRefusal, the liveness vendor CallbackRejected.
    headers = bank.sign_headers(KEY, bank.NOTIFY, "M1", BODY, now=NOW)
    with pytest.raises(ChannelRefusal) as refusal:
        bank.verify_headers(headers, BODY, purpose=bank.NOTIFY, keys=RING, account="M2", now=NOW)
    assert refusal.value.reason is RefusalReason.MISMATCH
    headers = wire.sign_headers(KEY, wire.CALLBACK, "app-1", BODY, now=NOW - 301)
    with pytest.raises(CallbackRejected) as rejection:
        wire.verify_headers(headers, BODY, purpose=wire.CALLBACK, keys=RING, account="app-1", now=NOW)
    assert rejection.value.reason is RejectReason.STALE
    assert not isinstance(rejection.value, Refused)


def test_the_two_spellings_keep_their_documented_headers_and_limits() -> None:
    assert bank.HEADERS == ("Bank-Merchant-Id", "Bank-Key-Id", "Bank-Timestamp", "Bank-Nonce", "Bank-Signature")
    assert wire.HEADERS == (
        "Liveness-App-Id",
        "Liveness-Key-Id",
        "Liveness-Timestamp",
        "Liveness-Nonce",
        "Liveness-Signature",
    )
    assert (bank.SCHEME.max_body, bank.SCHEME.max_age, bank.SCHEME.max_ahead) == (64 * 1024, 300, 30)
    assert (wire.SCHEME.max_body, wire.SCHEME.max_age, wire.SCHEME.max_ahead) == (16 * 1024, 300, 5)
    # Bank bodies go out with sorted keys (docs/bank-gateway.md), the vendor's in the order written (docs/liveness.md).
    assert bank.dumps({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
    assert wire.dumps({"b": 1, "a": "é"}) == '{"b":1,"a":"é"}'.encode()


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":1,"a":2}',
        b'{"a":NaN}',
        b'{"a":-Infinity}',
        b"[]",
        b'"text"',
        b"\xff\xfe",
        b"",
        b"{" * 1000,
        b"[" * 1000,
        b" " * 1025,
    ],
)
def test_json_is_strict(body: bytes) -> None:
    with pytest.raises(Refused) as caught:
        SCHEME.loads(body)
    assert caught.value.reason is Reason.MALFORMED


def test_an_integer_too_long_for_python_is_malformed_not_a_crash() -> None:
    # json raises a plain ValueError here, not a JSONDecodeError (the bank's parser let it out: a 500).
    body = b'{"amount_fen":' + b"1" * 5000 + b"}"
    with pytest.raises(Refused) as caught:
        Scheme("T", "A", max_body=8192).loads(body)
    assert caught.value.reason is Reason.MALFORMED
    with pytest.raises(ChannelRefusal):
        bank.loads(body)


def test_times_in_bodies() -> None:
    moment = datetime(2026, 11, 28, 18, 0, 5, tzinfo=timezone(timedelta(hours=8)))
    assert format_time(moment) == "2026-11-28T10:00:05Z"
    assert SCHEME.parse_time("2026-11-28T10:00:05Z", "at") == moment.astimezone(UTC)
    for value in ("2026-11-28 10:00:05", "2026-02-30T10:00:00Z", "2026-11-28T10:00:05+08:00", 1796000000, None):
        with pytest.raises(Refused) as caught:
            SCHEME.parse_time(value, "at")
        assert caught.value.reason is Reason.MALFORMED and "at " in caught.value.message


def test_a_peer_signs_and_verifies_with_its_configuration() -> None:
    ours = SigningKey.generate("us-1")
    # Each side's view: we sign with ours and verify with theirs; they the other way round.
    we = Peer(SCHEME, ACCOUNT, ours, RING, max_age=5, max_ahead=0)
    they = Peer(SCHEME, ACCOUNT, KEY, KeyRing.of((ours.key_id, ours.public_pem())))
    request = we.sign(request_purpose("/v1/things"), BODY, now=NOW)
    assert they.verify(request_purpose("/v1/things"), request, BODY, now=NOW + 60).key_id == "us-1"  # default 60 s
    answer = they.sign(response_purpose("/v1/things"), b"{}", now=NOW, nonce=request[H_NONCE])
    assert we.verify(response_purpose("/v1/things"), answer, b"{}", now=NOW + 5, nonce=request[H_NONCE]).nonce
    with pytest.raises(Refused) as late:  # its own window, not the scheme's
        we.verify(response_purpose("/v1/things"), answer, b"{}", now=NOW + 6, nonce=request[H_NONCE])
    assert late.value.reason is Reason.STALE
    with pytest.raises(Refused) as other:  # an answer to another request
        we.verify(response_purpose("/v1/things"), answer, b"{}", now=NOW, nonce="c" * 32)
    assert other.value.reason is Reason.MISMATCH
    with pytest.raises(Refused) as own:  # our own request sent back is not an answer
        we.verify(request_purpose("/v1/things"), request, BODY, now=NOW)
    assert own.value.reason is Reason.UNKNOWN_KEY


def test_json_objects_parse() -> None:
    assert SCHEME.loads('{"a":[1,2.5,null,true],"b":{"c":"é"}}'.encode()) == {
        "a": [1, 2.5, None, True],
        "b": {"c": "é"},
    }


_text = st.text(max_size=70)


@settings(max_examples=300, deadline=None)
@given(
    headers=st.dictionaries(st.sampled_from([*SCHEME.headers, "X-Other"]), _text, max_size=6),
    body=st.binary(max_size=1100),
    now=st.floats(min_value=0, max_value=4e9),
)
def test_fuzz_arbitrary_headers_only_raise_refused(headers: dict[str, str], body: bytes, now: float) -> None:
    with contextlib.suppress(Refused):  # anything else (a KeyError, a UnicodeEncodeError) fails the test
        verify(headers, body, now=now)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(SCHEME.headers), value=_text, nonce=st.none() | _text)
def test_fuzz_one_header_of_a_signed_message_replaced(name: str, value: str, nonce: str | None) -> None:
    headers = signed(nonce="a" * 32) | {name: value}
    try:
        result = verify(headers, nonce=nonce)
    except Refused:
        return
    # Whatever passes says exactly what was signed.
    assert result == Signed(ACCOUNT, KEY.key_id, int(NOW), "a" * 32)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=1100))
def test_fuzz_loads_gives_an_object_or_refused(body: bytes) -> None:
    try:
        value = SCHEME.loads(body)
    except Refused as exc:
        assert exc.reason is Reason.MALFORMED
    else:
        assert isinstance(value, dict)
