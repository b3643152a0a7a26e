"""The generic liveness vendor's wire format: signatures over purpose, app id, timestamp, nonce and the exact body;
the past-only window; two keys valid at once; the callback parser (fuzzed: only CallbackRejected may come out)."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authsvc.liveness import wire
from authsvc.liveness.generic import GenericConfig, GenericVendor
from authsvc.liveness.vendor import CallbackRejected, RejectReason

NOW = 1_796_000_000.0
APP = "sscard-test"
VENDOR = wire.SigningKey.generate("vendor-2026")
BIZ = "b" * 32
EVENT = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)


def ring(*keys: wire.SigningKey) -> wire.KeyRing:
    return wire.KeyRing.of(*((k.key_id, k.private_key.public_key()) for k in keys or (VENDOR,)))


def adapter(keys: wire.KeyRing | None = None, *, max_age: int = 300, max_ahead: int = 5) -> GenericVendor:
    ours = wire.SigningKey.generate("sscard-1")
    config = GenericConfig("sandbox", APP, ours, keys or ring(), max_age, max_ahead)
    return GenericVendor(config, None, clock=lambda: NOW)  # type: ignore[arg-type]


def callback(
    *, key: wire.SigningKey = VENDOR, at: float = NOW, app: str = APP, **fields: object
) -> tuple[dict[str, str], bytes]:
    doc: dict[str, object] = {
        "session_id": "LV123",
        "biz_ref": BIZ,
        "live": True,
        "score": 91.5,
        "event_time": "2026-11-28T10:00:00Z",
    }
    doc.update(fields)
    body = wire.dumps({k: v for k, v in doc.items() if v is not None})
    return wire.sign_headers(key, wire.CALLBACK, app, body, now=at), body


def rejected(headers: dict[str, str], body: bytes, **kwargs: object) -> RejectReason:
    with pytest.raises(CallbackRejected) as caught:
        adapter(**kwargs).read_callback(headers, body, now=NOW)  # type: ignore[arg-type]
    return caught.value.reason


def test_a_signed_callback_reads_as_its_verdict() -> None:
    headers, body = callback()
    verdict = adapter().read_callback(headers, body, now=NOW)
    assert (verdict.vendor, verdict.session_id, verdict.biz_ref) == ("sandbox", "LV123", BIZ)
    assert (verdict.live, verdict.score, verdict.event_time) == (True, 91.5, EVENT)
    assert verdict.nonce == headers[wire.H_NONCE] and verdict.nonce_ttl == 306


def test_the_signature_covers_the_exact_body_and_every_header_field() -> None:
    headers, body = callback()
    assert rejected(headers, body.replace(b"91.5", b"99.5")) is RejectReason.SIGNATURE
    assert rejected(headers, body + b" ") is RejectReason.SIGNATURE
    for name, value in [(wire.H_NONCE, "f" * 32), (wire.H_TIMESTAMP, str(int(NOW) - 1)), (wire.H_APP, "other-app")]:
        assert rejected({**headers, name: value}, body) is RejectReason.SIGNATURE
    # A response's signature is not a callback's, even over the same bytes.
    other = wire.sign_headers(VENDOR, wire.response_purpose(wire.SESSIONS_PATH), APP, body, now=NOW)
    assert rejected(other, body) is RejectReason.SIGNATURE


def test_unknown_keys_other_customers_and_missing_headers_are_refused() -> None:
    stranger = wire.SigningKey.generate("vendor-2099")
    assert rejected(*callback(key=stranger)) is RejectReason.UNKNOWN_KEY
    impostor = wire.SigningKey.generate("vendor-2026")  # the right key id, another key
    assert rejected(*callback(key=impostor)) is RejectReason.SIGNATURE
    assert rejected(*callback(app="another-customer")) is RejectReason.MISMATCH
    headers, body = callback()
    for name in wire.HEADERS:
        assert rejected({k: v for k, v in headers.items() if k != name}, body) is RejectReason.MALFORMED
    assert rejected({**headers, wire.H_NONCE: "short"}, body) is RejectReason.MALFORMED
    assert rejected({**headers, wire.H_TIMESTAMP: "-5"}, body) is RejectReason.MALFORMED


def test_a_header_given_twice_is_refused() -> None:
    import httpx

    headers, body = callback()
    doubled = httpx.Headers([*headers.items(), (wire.H_KEY_ID, "vendor-2027")])
    assert rejected(doubled, body) is RejectReason.MALFORMED  # type: ignore[arg-type]


@pytest.mark.parametrize(("offset", "accepted"), [(0, True), (-300, True), (-301, False), (5, True), (6, False)])
def test_the_window_is_past_only_with_a_small_skew(offset: int, accepted: bool) -> None:
    headers, body = callback(at=NOW + offset)
    if accepted:
        assert adapter().read_callback(headers, body, now=NOW).live
    else:
        assert rejected(headers, body) is RejectReason.STALE


def test_during_a_rotation_both_keys_verify() -> None:
    new = wire.SigningKey.generate("vendor-2027")
    both = ring(VENDOR, new)
    for key in (VENDOR, new):
        headers, body = callback(key=key)
        assert adapter(both).read_callback(headers, body, now=NOW).session_id == "LV123"
    assert rejected(*callback(key=VENDOR), keys=ring(new)) is RejectReason.UNKNOWN_KEY


@pytest.mark.parametrize(
    "fields",
    [
        {"live": "true"},
        {"live": None},
        {"score": True},
        {"score": "90"},
        {"score": -0.5},
        {"score": 100.01},
        {"score": None},
        {"session_id": ""},
        {"session_id": "a b"},
        {"biz_ref": "short"},
        {"event_time": "2026-11-28 10:00:00"},
        {"event_time": "2026-02-30T10:00:00Z"},
    ],
)
def test_verdict_fields_are_checked(fields: dict[str, object]) -> None:
    headers, body = callback(**fields)
    assert rejected(headers, body) is RejectReason.MALFORMED


def test_bodies_that_are_not_a_json_object_are_refused() -> None:
    for body in (b"[]", b"\xff", b'{"score": NaN}', b'{"live":true,"live":false}', b"[" * 10_000, b"{" * 100_000):
        headers = wire.sign_headers(VENDOR, wire.CALLBACK, APP, body, now=NOW)
        assert rejected(headers, body) is RejectReason.MALFORMED


def test_scores_from_0_to_100_pass_the_parser() -> None:
    for score in (0, 0.0, 55, 100):
        headers, body = callback(score=score)
        assert adapter().read_callback(headers, body, now=NOW).score == float(score)


def test_acknowledgements() -> None:
    done = adapter().acknowledge()
    assert (done.status, json.loads(done.body)) == (200, {"code": "OK"})
    again = adapter().acknowledge(retry=True)
    assert again.status == 503 and json.loads(again.body)["code"] == "RETRY"


_text = st.text(max_size=80)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(headers=st.dictionaries(st.sampled_from([*wire.HEADERS, "X-Other"]), _text, max_size=6), body=st.binary())
def test_fuzz_arbitrary_messages_only_raise_callback_rejected(headers: dict[str, str], body: bytes) -> None:
    with contextlib.suppress(CallbackRejected):  # anything else (a KeyError, a 500) fails the test
        adapter().read_callback(headers, body, now=NOW)


@settings(max_examples=300, deadline=None)
@given(
    changes=st.dictionaries(
        st.sampled_from(["session_id", "biz_ref", "live", "score", "event_time", "extra"]), _json, max_size=4
    )
)
def test_fuzz_properly_signed_bodies_near_a_good_one_parse_or_are_rejected(changes: dict[str, object]) -> None:
    # Signed with the right key, so the parser itself is what is exercised.
    doc: dict[str, object] = {
        "session_id": "LV123",
        "biz_ref": BIZ,
        "live": True,
        "score": 91.5,
        "event_time": "2026-11-28T10:00:00Z",
        **changes,
    }
    body = wire.dumps(doc)
    headers = wire.sign_headers(VENDOR, wire.CALLBACK, APP, body, now=NOW)
    try:
        verdict = adapter().read_callback(headers, body, now=NOW)
    except CallbackRejected as exc:
        assert exc.reason is RejectReason.MALFORMED
    else:
        assert isinstance(verdict.live, bool) and 0 <= verdict.score <= 100
