"""The generic liveness vendor's adapter (LivenessVendor) over authsvc/liveness/wire.py.

We open a session with a signed POST to `<base>/v1/liveness/sessions` (our key, our app id); the vendor answers,
signed and bound to our request's nonce, with its session id and the capture URL the citizen's device opens. Later
the vendor POSTs the verdict, signed with one of its keys, to our callback URL. Nothing here touches the database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from authsvc.liveness import wire
from authsvc.liveness.vendor import (
    Acknowledgement,
    CallbackRejected,
    SessionRequest,
    VendorDeclined,
    VendorSession,
    VendorUnavailable,
    Verdict,
)
from keys.signed_messages import Peer

log = logging.getLogger("sscard.liveness")


@dataclass(frozen=True)
class GenericConfig:
    name: str  # the vendor's name in our callback URL
    app_id: str  # our account at the vendor
    signing_key: wire.SigningKey
    vendor_keys: wire.KeyRing
    max_age: int  # callbacks older than this are refused
    max_ahead: int  # ... and those dated further ahead than this (the vendor's clock may run slightly fast)

    @property
    def peer(self) -> Peer:
        return Peer(wire.SCHEME, self.app_id, self.signing_key, self.vendor_keys, self.max_age, self.max_ahead)

    @property
    def nonce_ttl(self) -> int:
        # A nonce must be remembered as long as its timestamp can still pass the window.
        return self.max_age + self.max_ahead + 1


class GenericVendor:
    def __init__(self, config: GenericConfig, http: httpx.Client, *, clock: Callable[[], float]) -> None:
        self.config = config
        self.name = config.name
        self._http = http
        self._clock = clock

    def open_session(self, request: SessionRequest) -> VendorSession:
        config = self.config
        body = wire.session_request(
            config.app_id,
            biz_ref=request.biz_ref,
            reference_id=request.reference_id,
            callback_url=request.callback_url,
            return_url=request.return_url,
            expires_in=request.expires_in,
        )
        headers = config.peer.sign(wire.request_purpose(wire.SESSIONS_PATH), body, now=self._clock())
        try:
            answer = self._http.post(
                wire.SESSIONS_PATH, content=body, headers={**headers, "Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise VendorUnavailable(f"{self.name}: {type(exc).__name__}") from None
        if answer.status_code >= 500:
            raise VendorUnavailable(f"{self.name}: HTTP {answer.status_code}")
        try:
            config.peer.verify(
                wire.response_purpose(wire.SESSIONS_PATH),
                answer.headers,
                answer.content,
                now=self._clock(),
                nonce=headers[wire.H_NONCE],
            )
            doc = wire.loads(answer.content)
            code = doc.get("code")
            if code != "OK":
                message = doc.get("message")
                raise VendorDeclined(
                    str(code)[:40] if isinstance(code, str) else "UNKNOWN",
                    message[:200] if isinstance(message, str) else "",
                )
            session = VendorSession(
                session_id=wire.text(doc, "session_id"),
                capture_url=_capture_url(doc.get("capture_url")),
                expires_in=_seconds(doc.get("expires_in"), request.expires_in),
            )
        except CallbackRejected as exc:
            # An answer we cannot trust tells us nothing: the session may or may not exist at the vendor.
            log.error("%s: session answer refused: %s (%s)", self.name, exc.reason, exc.message)
            raise VendorUnavailable(f"{self.name}: answer refused ({exc.reason})") from None
        return session

    def read_callback(self, headers: Mapping[str, str], body: bytes, *, now: float) -> Verdict:
        config = self.config
        signed = config.peer.verify(wire.CALLBACK, headers, body, now=now)
        parsed = wire.parse_callback(body)
        return Verdict(
            vendor=self.name,
            session_id=parsed.session_id,
            biz_ref=parsed.biz_ref,
            live=parsed.live,
            score=parsed.score,
            event_time=parsed.event_time,
            nonce=signed.nonce,
            nonce_ttl=config.nonce_ttl,
        )

    def acknowledge(self, *, retry: bool = False) -> Acknowledgement:
        status, body = wire.acknowledgement(retry=retry)
        return Acknowledgement(status, body, "application/json")


def _capture_url(value: object) -> str:
    parts = urlsplit(value) if isinstance(value, str) and len(value) <= 2048 else None
    if parts is None or parts.scheme not in ("https", "http") or not parts.netloc:
        raise CallbackRejected(wire.RejectReason.MALFORMED, "capture_url must be an http(s) URL")
    return str(value)


def _seconds(value: object, asked: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= asked:
        raise CallbackRejected(wire.RejectReason.MALFORMED, "expires_in must be whole seconds, at most those asked")
    return value
