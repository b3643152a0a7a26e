"""Opening a session at the generic vendor: our signed request, and only a signed answer bound to our request's
nonce is believed; anything else is VendorUnavailable (or VendorDeclined when the vendor says no, signed)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from authsvc.liveness import wire
from authsvc.liveness.generic import GenericConfig, GenericVendor
from authsvc.liveness.vendor import SessionRequest, VendorDeclined, VendorUnavailable

NOW = 1_796_000_000.0
APP = "sscard-test"
OURS = wire.SigningKey.generate("sscard-1")
VENDOR = wire.SigningKey.generate("vendor-2026")
REQUEST = SessionRequest("b" * 32, "gallery:1", "https://id.example/v1/liveness/callbacks/sandbox", 180)
Handler = Callable[[httpx.Request, dict[str, object]], httpx.Response]


def answer(doc: dict[str, object], request: httpx.Request, *, key: wire.SigningKey = VENDOR, nonce: str | None = None,
           status: int = 200) -> httpx.Response:  # fmt: skip
    body = wire.dumps(doc)
    headers = wire.sign_headers(
        key,
        wire.response_purpose(wire.SESSIONS_PATH),
        APP,
        body,
        now=NOW,
        nonce=nonce or request.headers[wire.H_NONCE],
    )
    return httpx.Response(status, content=body, headers=headers)


def vendor(handler: Handler) -> GenericVendor:
    seen: dict[str, object] = {}

    def transport(request: httpx.Request) -> httpx.Response:
        # The request must verify under our key, as the vendor checks it.
        wire.verify_headers(
            request.headers,
            request.content,
            purpose=wire.request_purpose(wire.SESSIONS_PATH),
            keys=wire.KeyRing.of((OURS.key_id, OURS.private_key.public_key())),
            account=APP,
            now=NOW,
            max_age=300,
            max_ahead=5,
        )
        seen.update(json.loads(request.content))
        return handler(request, seen)

    http = httpx.Client(base_url="https://vendor.example", transport=httpx.MockTransport(transport))
    keys = wire.KeyRing.of((VENDOR.key_id, VENDOR.private_key.public_key()))
    return GenericVendor(GenericConfig("sandbox", APP, OURS, keys, 300, 5), http, clock=lambda: NOW)


def good(request: httpx.Request, seen: dict[str, object]) -> httpx.Response:
    assert seen == {
        "app_id": APP,
        "biz_ref": REQUEST.biz_ref,
        "reference_id": "gallery:1",
        "callback_url": REQUEST.callback_url,
        "return_url": None,
        "expires_in": 180,
    }
    doc = {"code": "OK", "session_id": "LV1", "capture_url": "https://vendor.example/capture/LV1", "expires_in": 120}
    return answer(doc, request)


def test_a_session_is_opened_with_a_signed_request_and_a_signed_answer() -> None:
    opened = vendor(good).open_session(REQUEST)
    assert (opened.session_id, opened.capture_url, opened.expires_in) == (
        "LV1",
        "https://vendor.example/capture/LV1",
        120,
    )


def test_the_vendor_declining_is_vendor_declined() -> None:
    def declined(request: httpx.Request, _seen: dict[str, object]) -> httpx.Response:
        return answer({"code": "REFERENCE_UNKNOWN", "message": "no such photo"}, request)

    with pytest.raises(VendorDeclined) as caught:
        vendor(declined).open_session(REQUEST)
    assert caught.value.code == "REFERENCE_UNKNOWN"


OK_DOC = {"code": "OK", "session_id": "LV1", "capture_url": "https://vendor.example/capture/LV1", "expires_in": 60}


@pytest.mark.parametrize(
    "handler",
    [
        lambda r, _s: httpx.Response(502, content=b"bad gateway"),
        lambda r, _s: httpx.Response(200, content=wire.dumps(OK_DOC)),  # unsigned
        lambda r, _s: answer(OK_DOC, r, key=wire.SigningKey.generate("vendor-2026")),  # another key
        lambda r, _s: answer(OK_DOC, r, nonce="f" * 32),  # an answer to another request
        lambda r, _s: answer({**OK_DOC, "capture_url": "javascript:alert(1)"}, r),
        lambda r, _s: answer({**OK_DOC, "expires_in": 999}, r),  # longer than asked
        lambda r, _s: answer({**OK_DOC, "session_id": "x y"}, r),
    ],
)
def test_answers_we_cannot_trust_are_vendor_unavailable(handler: Handler) -> None:
    with pytest.raises(VendorUnavailable):
        vendor(handler).open_session(REQUEST)


def test_a_vendor_that_cannot_be_reached_is_vendor_unavailable() -> None:
    def down(request: httpx.Request, _seen: dict[str, object]) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(VendorUnavailable):
        vendor(down).open_session(REQUEST)
