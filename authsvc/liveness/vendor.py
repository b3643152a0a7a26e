"""The liveness vendor interface: what the service asks of any face-liveness vendor (实人 check).

A vendor adapter turns our request for a liveness session into the vendor's signed API call, and the vendor's
signed verdict callback into a typed `Verdict`. It holds no database and decides nothing about logins:
authsvc/liveness/verdicts.py applies verdicts, authsvc/login/face.py starts sessions for logins. Implementations:
authsvc/liveness/generic.py (the generic vendor, wire format in authsvc/liveness/wire.py), simulated by
authsvc/liveness/sandbox.py over real HTTP.

Errors, which callers treat differently:
* `VendorUnavailable`: the vendor's answer is unknown or unusable (timeout, 5xx, a response whose signature does
  not verify, our keys not usable): nothing was opened that we know of; the citizen may try again later.
* `VendorDeclined`: the vendor answered, signed, that it will not open this session (an unknown reference photo).
* `CallbackRejected`: a callback we will not act on (malformed, forged, stale, for another customer); its reason
  chooses the answer (authsvc/liveness/endpoints.py), its message names fields, never values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable


class RejectReason(StrEnum):
    MALFORMED = "malformed"  # not the vendor's format
    SIGNATURE = "signature"  # missing or not valid under the named key
    UNKNOWN_KEY = "unknown_key"  # the key id names no key we hold (or a retired one)
    STALE = "stale"  # outside the past-only time window
    MISMATCH = "mismatch"  # addressed to another customer of the vendor


class VendorUnavailable(Exception):
    """The vendor did not answer usably; nothing can be concluded (retry later)."""


class VendorDeclined(Exception):
    """The vendor answered, signed, that it will not open this session (`code` is its own word, e.g.
    REFERENCE_UNKNOWN: no such reference photo in its gallery)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class CallbackRejected(Exception):
    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class SessionRequest:
    """What a vendor needs to open a liveness session for one pending login."""

    biz_ref: str  # our opaque id of the session (the vendor echoes it in the verdict)
    reference_id: str  # the cardholder's reference photo id in the vendor's gallery (never the photo)
    callback_url: str
    expires_in: int  # seconds the capture may take
    return_url: str | None = None  # where the citizen's device goes after the capture; None: stays on the vendor


@dataclass(frozen=True)
class VendorSession:
    session_id: str  # the vendor's id; unique per vendor
    capture_url: str  # what the citizen's device opens (shown as a QR code)
    expires_in: int


@dataclass(frozen=True)
class Verdict:
    """A verified verdict callback."""

    vendor: str
    session_id: str
    biz_ref: str
    live: bool  # the vendor saw a live person (not a photo, a screen or a mask)
    score: float  # similarity to the reference photo, 0 to 100
    event_time: datetime  # when the vendor decided (its clock)
    nonce: str  # single use: the caller spends it for `nonce_ttl` seconds before acting
    nonce_ttl: int


@dataclass(frozen=True)
class Acknowledgement:
    """The HTTP answer the vendor expects, without tying it to a web framework."""

    status: int
    body: bytes
    content_type: str


@runtime_checkable
class LivenessVendor(Protocol):
    name: str

    def open_session(self, request: SessionRequest) -> VendorSession:
        """Open a session at the vendor; raises VendorUnavailable or VendorDeclined."""
        ...

    def read_callback(self, headers: Mapping[str, str], body: bytes, *, now: float) -> Verdict:
        """Verify and parse a verdict callback; raises CallbackRejected (nothing may be stored or acted on)."""
        ...

    def acknowledge(self, *, retry: bool = False) -> Acknowledgement:
        """What makes the vendor stop retrying (the verdict is ours), or, with `retry`, retry later."""
        ...
