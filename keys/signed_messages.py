"""Signed HTTP messages with ECDSA P-256: the one recipe behind the bank gateway (payments/channels/bank.py,
docs/bank-gateway.md) and the liveness vendor (authsvc/liveness/wire.py, docs/liveness.md).

Both sides sign with ECDSA P-256 / SHA-256 (DER, base64) over one layout:

    <purpose>\\n<account id>\\n<timestamp>\\n<nonce>\\n<body bytes>

The purpose (`REQUEST <path>`, `RESPONSE <path>` or a callback word) keeps a signature made for one use from
verifying for another; the account id (our merchant or app id at the other side) keeps one made for another
customer from verifying as ours. Five headers carry it, spelt per counterpart (`Bank-Merchant-Id`, `Bank-Key-Id`,
... or `Liveness-App-Id`, ...): a `Scheme` holds what differs (header names, body limit, default window, JSON key
order, the exception its callers catch). A `KeyRing` holds every key of the other side currently valid, so during
a rotation the old and the new key both verify.

Whatever cannot be verified or understood raises the scheme's refusal (`Refused` unless the scheme names another
factory) with a `Reason`; messages name fields, never their values.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

# No whitespace or separators: a newline in any of them would let bytes move between the fields of the signed
# string (and '|' separates the fields of the bank's files).
TOKEN = re.compile(r"[A-Za-z0-9_\-]{1,64}")
NONCE = re.compile(r"[A-Za-z0-9_\-]{16,64}")
_TIMESTAMP = re.compile(r"[1-9][0-9]{0,11}")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


class Reason(StrEnum):
    """Why a message was refused; the values are those of the callers' own reason enums."""

    MALFORMED = "malformed"  # not the format: a header missing, twice or misshapen, a body too large or not JSON
    SIGNATURE = "signature"  # missing, undecodable or not valid under the named key
    UNKNOWN_KEY = "unknown_key"  # the key id names no key we hold (or a retired one)
    STALE = "stale"  # outside the past-only time window
    MISMATCH = "mismatch"  # for another account, or a response to another request


class Refused(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


Refusal = Callable[[Reason, str], Exception]


# --- keys ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """One side's private key with the id the other side knows it by."""

    key_id: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        if not TOKEN.fullmatch(self.key_id):
            raise ValueError("a key id is 1 to 64 of A-Z a-z 0-9 _ -")
        if not isinstance(self.private_key.curve, ec.SECP256R1):
            raise ValueError("signed-message keys are ECDSA P-256")

    @classmethod
    def generate(cls, key_id: str) -> SigningKey:
        return cls(key_id, ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, key_id: str, pem: bytes) -> SigningKey:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("not an EC private key")
        return cls(key_id, key)

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private_key.sign(message, ec.ECDSA(hashes.SHA256()))).decode("ascii")

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


@dataclass(frozen=True)
class KeyRing:
    """The other side's public keys by key id: every one verifies, so a new key and the old one overlap."""

    keys: Mapping[str, ec.EllipticCurvePublicKey]

    @classmethod
    def of(cls, *pairs: tuple[str, bytes | ec.EllipticCurvePublicKey]) -> KeyRing:
        keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for key_id, material in pairs:
            key = serialization.load_pem_public_key(material) if isinstance(material, bytes) else material
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
                raise ValueError(f"key {key_id!r} is not an ECDSA P-256 public key")
            keys[key_id] = key
        return cls(keys)


# --- the signed string -------------------------------------------------------------------------------------------


def signed_message(purpose: str, account: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    return f"{purpose}\n{account}\n{timestamp}\n{nonce}\n".encode("ascii") + body


def request_purpose(path: str) -> str:
    return f"REQUEST {path}"


def response_purpose(path: str) -> str:
    return f"RESPONSE {path}"


def new_nonce() -> str:
    return secrets.token_hex(16)


def format_time(moment: datetime) -> str:
    """A time in a body: `YYYY-MM-DDTHH:MM:SSZ`, UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Signed:
    """What a verified message's headers said."""

    account: str
    key_id: str
    timestamp: int
    nonce: str


class _NotStrict(ValueError):
    """JSON the standard parser would take but we do not (raised inside its hooks)."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # Parsers disagree on which of two members wins; the signer may have meant the other one.
            raise _NotStrict("a JSON member appears twice")
        result[key] = value
    return result


def _no_constant(_: str) -> Any:
    raise _NotStrict("NaN and Infinity are not JSON")


@dataclass(frozen=True)
class Scheme:
    """One counterpart's spelling of the recipe: headers `<prefix>-<account>`, `<prefix>-Key-Id`,
    `<prefix>-Timestamp`, `<prefix>-Nonce`, `<prefix>-Signature`; bodies of at most `max_body` bytes; the default
    window [now - max_age, now + max_ahead]; JSON sent with sorted keys or in the caller's order; `refuse` builds
    the exception the caller's layer catches."""

    prefix: str
    account: str
    max_body: int
    max_age: int = 300
    max_ahead: int = 30
    sort_keys: bool = False
    refuse: Refusal = Refused

    @property
    def headers(self) -> tuple[str, str, str, str, str]:
        p = self.prefix
        return f"{p}-{self.account}", f"{p}-Key-Id", f"{p}-Timestamp", f"{p}-Nonce", f"{p}-Signature"

    def _refuse(self, reason: Reason, message: str) -> NoReturn:
        raise self.refuse(reason, message)

    def sign_headers(
        self, key: SigningKey, purpose: str, account: str, body: bytes, *, now: float, nonce: str | None = None
    ) -> dict[str, str]:
        """The five headers of a signed message. A response passes the request's nonce, binding it to it."""
        nonce = nonce or new_nonce()
        timestamp = str(int(now))
        signature = key.sign(signed_message(purpose, account, timestamp, nonce, body))
        return dict(zip(self.headers, (account, key.key_id, timestamp, nonce, signature), strict=True))

    def verify_signature(self, keys: KeyRing, key_id: str, message: bytes, signature: str) -> None:
        key = keys.keys.get(key_id)
        if key is None:
            self._refuse(Reason.UNKNOWN_KEY, f"{self.headers[1]} names no key we hold")
        try:
            raw = base64.b64decode(signature.encode("ascii"), validate=True)
            key.verify(raw, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, binascii.Error, ValueError, UnicodeEncodeError):
            self._refuse(Reason.SIGNATURE, "signature does not verify")

    def _header(self, headers: Mapping[str, str], name: str) -> str:
        getlist = getattr(headers, "getlist", None) or getattr(headers, "get_list", None)
        if getlist is not None:
            values = list(getlist(name))
        else:
            values = [v for k, v in headers.items() if k.lower() == name.lower()]
        if len(values) != 1:
            self._refuse(Reason.MALFORMED, f"header {name} must appear exactly once")
        return values[0]

    def verify_headers(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        purpose: str,
        keys: KeyRing,
        account: str,
        now: float,
        max_age: int | None = None,
        max_ahead: int | None = None,
        nonce: str | None = None,
    ) -> Signed:
        """Check a signed message: headers well-formed, the signature under a key of the ring, our account id, the
        timestamp inside the past-only window, and (for a response) the nonce of our request echoed back."""
        names = self.headers
        h_account, h_key_id, h_timestamp, h_nonce, h_signature = names
        values = {name: self._header(headers, name) for name in names}
        if not TOKEN.fullmatch(values[h_account]) or not TOKEN.fullmatch(values[h_key_id]):
            self._refuse(Reason.MALFORMED, f"{h_account} or {h_key_id} malformed")
        if not _TIMESTAMP.fullmatch(values[h_timestamp]):
            self._refuse(Reason.MALFORMED, f"{h_timestamp} must be Unix seconds")
        if not NONCE.fullmatch(values[h_nonce]):
            self._refuse(Reason.MALFORMED, f"{h_nonce} must be 16 to 64 of A-Z a-z 0-9 _ -")
        if len(body) > self.max_body:
            self._refuse(Reason.MALFORMED, "body too large")
        message = signed_message(purpose, values[h_account], values[h_timestamp], values[h_nonce], body)
        self.verify_signature(keys, values[h_key_id], message, values[h_signature])
        # After the signature, so that only the other side can learn which of our values it got wrong.
        if not secrets.compare_digest(values[h_account], account):
            self._refuse(Reason.MISMATCH, f"{h_account} is not ours")
        timestamp = int(values[h_timestamp])
        max_age = self.max_age if max_age is None else max_age
        max_ahead = self.max_ahead if max_ahead is None else max_ahead
        if timestamp > now + max_ahead or timestamp < now - max_age:
            self._refuse(Reason.STALE, f"{h_timestamp} outside the window")
        if nonce is not None and not secrets.compare_digest(values[h_nonce], nonce):
            self._refuse(Reason.MISMATCH, "the response's nonce is not our request's")
        return Signed(values[h_account], values[h_key_id], timestamp, values[h_nonce])

    def loads(self, body: bytes) -> dict[str, Any]:
        """A JSON object, strictly: UTF-8, no repeated members, no NaN, bounded."""
        if len(body) > self.max_body:
            self._refuse(Reason.MALFORMED, "body too large")
        try:
            value = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except _NotStrict as exc:
            self._refuse(Reason.MALFORMED, str(exc))
        # ValueError covers more than JSONDecodeError: an integer of more than 4300 digits, for one.
        except (UnicodeDecodeError, ValueError, RecursionError):
            self._refuse(Reason.MALFORMED, "body is not UTF-8 JSON")
        if not isinstance(value, dict):
            self._refuse(Reason.MALFORMED, "body is not a JSON object")
        return value

    def dumps(self, value: Mapping[str, Any]) -> bytes:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=self.sort_keys).encode("utf-8")

    def parse_time(self, value: object, name: str) -> datetime:
        """A time field of a body, as `format_time` writes it."""
        if not isinstance(value, str) or not _TIME.fullmatch(value):
            self._refuse(Reason.MALFORMED, f"{name} must be YYYY-MM-DDTHH:MM:SSZ")
        try:
            return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            self._refuse(Reason.MALFORMED, f"{name} is not a date and time")


@dataclass(frozen=True)
class Peer:
    """The other side as one configuration talks to it: the scheme, our account id there, our key, its keys and
    the window (None: the scheme's default)."""

    scheme: Scheme
    account: str
    signing_key: SigningKey = field(repr=False)
    keys: KeyRing = field(repr=False)
    max_age: int | None = None
    max_ahead: int | None = None

    def sign(self, purpose: str, body: bytes, *, now: float, nonce: str | None = None) -> dict[str, str]:
        return self.scheme.sign_headers(self.signing_key, purpose, self.account, body, now=now, nonce=nonce)

    def verify(
        self, purpose: str, headers: Mapping[str, str], body: bytes, *, now: float, nonce: str | None = None
    ) -> Signed:
        """A message from the other side: signed by one of its keys, for our account, inside the window, and (with
        `nonce`, for the response to our request) bound to that request."""
        return self.scheme.verify_headers(
            headers,
            body,
            purpose=purpose,
            keys=self.keys,
            account=self.account,
            now=now,
            max_age=self.max_age,
            max_ahead=self.max_ahead,
            nonce=nonce,
        )
