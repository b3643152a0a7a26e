"""What the channel wire formats share: the refusal and the acknowledgement description."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum


class RefusalReason(StrEnum):
    """Why a callback was refused, stable enough to count in metrics and to choose the HTTP status by."""

    MALFORMED = "malformed"  # not the channel's format at all
    SIGNATURE = "signature"  # missing, undecodable or not valid under the selected key
    UNKNOWN_KEY = "unknown_key"  # the serial / key id names no key we hold
    STALE = "stale"  # outside the past-only time window
    DECRYPTION = "decryption"  # AEAD tag did not verify: wrong APIv3 key or tampered resource
    UNSUPPORTED = "unsupported"  # a well-formed message of a kind or state we do not handle
    MISMATCH = "mismatch"  # addressed to another merchant / application


class ChannelRefusal(Exception):
    """A channel message we will not act on.

    The message is meant for our logs and for the channel's retry console, so it names fields but never carries
    their values: a callback can contain payer identifiers, and signatures or keys are never echoed back.
    """

    def __init__(self, reason: RefusalReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """The HTTP response a channel expects, described without tying it to a web framework."""

    status: int
    body: bytes
    content_type: str | None

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type} if self.content_type else {}


def json_failure(status: int, message: str) -> Acknowledgement:
    """A JSON error body in the {"code": "FAIL", "message": ...} shape WeChat Pay documents for callback answers."""
    body = json.dumps({"code": "FAIL", "message": message}, ensure_ascii=False, separators=(",", ":"))
    return Acknowledgement(status=status, body=body.encode("utf-8"), content_type="application/json")
