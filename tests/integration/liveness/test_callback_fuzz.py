"""Hostile callbacks at the route, fuzzed with Hypothesis on both backends: whatever arrives (any headers, any body,
or a body near a good verdict properly signed) is answered 4xx problem+json with a reason, never 2xx or 5xx, and
changes no session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from authsvc.app import create_app
from authsvc.cli import prepare
from authsvc.config import Settings
from authsvc.database import unit_of_work
from authsvc.liveness import wire
from authsvc.liveness.models import LivenessSession
from authsvc.liveness.vendor import CallbackRejected
from authsvc.runtime import Runtime
from keys.channel_keys import import_key

APP_ID = "sscard-test"
VENDOR_KEY = wire.SigningKey.generate("vendor-2026")
BIZ = "b" * 32
URL = "/v1/liveness/callbacks/sandbox"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def callbacks(settings_factory: Callable[..., Settings]) -> Iterator[tuple[TestClient, Runtime]]:
    runtime = Runtime(
        settings_factory(liveness_vendor="sandbox", liveness_base_url="http://127.0.0.1:9", liveness_app_id=APP_ID)
    )
    prepare(runtime, migrate=False)
    with unit_of_work(runtime.sessions) as db:
        ours = wire.SigningKey.generate("sscard-1")
        for kind, data, serial in (
            ("liveness-api-key", ours.private_pem(), ours.key_id),
            ("liveness-vendor-key", VENDOR_KEY.public_pem(), VENDOR_KEY.key_id),
        ):
            import_key(db, runtime.sealer, channel="liveness", kind=kind, data=data, serial=serial)
        db.add(
            LivenessSession(
                biz_ref=BIZ,
                vendor="sandbox",
                vendor_session_id="LV1",
                login_id="l" * 32,
                subject="s" * 32,
                reference_id="gallery:1",
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            )
        )
    with TestClient(create_app(runtime=runtime), raise_server_exceptions=False) as client:
        yield client, runtime
    runtime.close()


def _untouched(runtime: Runtime) -> None:
    with unit_of_work(runtime.sessions) as db:
        row = db.query(LivenessSession).one()
        assert row.state == "open" and row.verdict_digest is None


def _refused(answer) -> None:  # type: ignore[no-untyped-def]
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["reason"]


_text = st.text(max_size=60)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
# Values of a verdict's own shapes too (another biz_ref or session id, a score in range), not only ones the parser
# refuses, so that a verdict well-formed but not for this session is tried.
_near = _json | st.from_regex(wire.BIZ_REF, fullmatch=True) | st.sampled_from(["LV1", "LV2"]) | st.floats(0, 100)
_header_text = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=60)


@FUZZ
@given(headers=st.dictionaries(st.sampled_from(wire.HEADERS), _header_text, max_size=5), body=st.binary(max_size=300))
def test_any_message_is_refused_with_a_reason(
    callbacks: tuple[TestClient, Runtime], headers: dict[str, str], body: bytes
) -> None:
    client, runtime = callbacks
    _refused(client.post(URL, content=body, headers=headers))
    _untouched(runtime)


@FUZZ
@given(
    changes=st.dictionaries(
        st.sampled_from(["session_id", "biz_ref", "live", "score", "event_time"]), _near, min_size=1, max_size=3
    )
)
def test_signed_bodies_near_a_good_verdict_for_our_session_are_refused_and_leave_it_alone(
    callbacks: tuple[TestClient, Runtime], changes: dict[str, object]
) -> None:
    import time

    client, runtime = callbacks
    # Near a good verdict for the open session LV1 itself, so that "changes no session" is something that can fail.
    doc = {"session_id": "LV1", "biz_ref": BIZ, "live": True, "score": 90.0, "event_time": "2026-11-28T10:00:00Z"}
    body = wire.dumps({**doc, **changes})
    try:
        parsed = wire.parse_callback(body)
    except CallbackRejected:
        parsed = None
    # A well-formed verdict for the real session and its biz_ref is rightly applied; anything else is refused.
    assume(parsed is None or (parsed.session_id, parsed.biz_ref) != ("LV1", BIZ))
    headers = wire.sign_headers(VENDOR_KEY, wire.CALLBACK, APP_ID, body, now=time.time())
    _refused(client.post(URL, content=body, headers=headers))
    _untouched(runtime)
