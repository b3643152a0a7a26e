"""The kiosk client: a card-and-PIN login against the service (docs/kiosk-api.md).

Every request is signed by `KioskAuth` over the exact method, path and body bytes httpx sends. A login
opens the reader first (no challenge is spent on an empty reader), asks the service for a challenge, runs
the card side (card.session) and hands the card's answers to the service. Anything the card refuses is
reported to the service with /abort (best effort) so the service can audit and throttle it, then raised as
`LoginFailed` with a reason, a one-line message for the operator and the CLI's exit code.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from card import reader as pcsc
from card.apdu import CardNotRecognised, CardStatusError, PinBlocked, WrongPin
from card.cryptogram import CHALLENGE_LEN, kiosk_context
from card.pinblock import is_valid_pin
from card.request_signing import b64url, b64url_decode, sign_headers
from card.session import CardSession

KIOSK_FORMAT = "sscard-kiosk/1"

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_CARD = 3
EXIT_REFUSED = 4
EXIT_READER = 5
EXIT_SERVICE = 6

# Header values must survive HTTP unchanged, so no spaces or controls in a terminal id.
_TERMINAL_ID = re.compile(r"[\x21-\x7e]{1,64}")
# The login id goes into the URL path: only unreserved characters, so it cannot redirect the request.
_LOGIN_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_JSON = {"Content-Type": "application/json", "Accept": "application/json, application/problem+json"}

_REFUSALS = {
    "card_lost": "card reported lost",
    "card_unknown": "card not known to the service",
    "card_frozen": "card frozen",
    "card_cancelled": "card cancelled",
    "card_expired": "card expired",
    "certificate_invalid": "card certificate not accepted",
    "cryptogram_invalid": "card authentication failed",
    "holder_mismatch": "card data do not match the holder on record",
    "pin_not_verified": "the PIN was not verified",
    "card_data_invalid": "card data refused by the service",
    "login_unknown": "login expired or unknown, start again",
    "terminal_unknown": "this kiosk is not registered with the service",
    "terminal_disabled": "this kiosk is disabled",
    "timestamp_out_of_window": "this kiosk's clock is off",
    "nonce_replayed": "request refused as a replay",
    "signature_missing": "request signature refused",
    "signature_malformed": "request signature refused",
    "signature_invalid": "request signature refused",
    "invalid_request": "request refused as malformed",
}


class KioskConfigError(ValueError):
    """kiosk.json is missing, malformed or holds an unusable key."""


class LoginFailed(Exception):
    def __init__(self, reason: str, message: str, exit_code: int, *, tries_left: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.exit_code = exit_code
        self.tries_left = tries_left


@dataclass(frozen=True)
class KioskConfig:
    terminal_id: str
    private_key: Ed25519PrivateKey
    service: str | None = None


def load_kiosk(path: str | os.PathLike[str]) -> KioskConfig:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
    except OSError as exc:
        raise KioskConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KioskConfigError(f"{path}: not a JSON document: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != KIOSK_FORMAT:
        raise KioskConfigError(f"{path}: not a kiosk file (format must be {KIOSK_FORMAT!r})")
    terminal_id, pem, service = doc.get("terminal_id"), doc.get("private_key_pem"), doc.get("service")
    if not isinstance(terminal_id, str) or not _TERMINAL_ID.fullmatch(terminal_id):
        raise KioskConfigError(f"{path}: terminal_id must be 1-64 printable ASCII characters without spaces")
    if not isinstance(pem, str):
        raise KioskConfigError(f"{path}: private_key_pem missing")
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise KioskConfigError(f"{path}: private_key_pem is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KioskConfigError(f"{path}: private_key_pem is not an Ed25519 key")
    if service is not None and not isinstance(service, str):
        raise KioskConfigError(f"{path}: service must be a URL string")
    return KioskConfig(terminal_id=terminal_id, private_key=key, service=service)


class KioskAuth(httpx.Auth):
    """Signs each request as it is about to be sent, so the signature covers exactly what goes out."""

    requires_request_body = True

    def __init__(self, kiosk: KioskConfig) -> None:
        self.kiosk = kiosk

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers.update(
            sign_headers(
                self.kiosk.private_key,
                terminal_id=self.kiosk.terminal_id,
                method=request.method,
                target=request.url.raw_path.decode("ascii"),
                body=request.content,
            )
        )
        yield request


def kiosk_client(
    service_url: str, kiosk: KioskConfig, *, timeout: float = 10.0, transport: httpx.BaseTransport | None = None
) -> httpx.Client:
    return httpx.Client(base_url=service_url, auth=KioskAuth(kiosk), timeout=timeout, transport=transport)


# -- talking to the service ----------------------------------------------------------------------------------


def refusal(response: httpx.Response) -> LoginFailed:
    reason, detail = None, None
    try:
        problem = response.json()
    except (ValueError, UnicodeDecodeError):
        problem = None
    if isinstance(problem, dict):
        raw_reason, raw_detail = problem.get("reason"), problem.get("detail") or problem.get("title")
        # The text ends up on a terminal: keep it short and printable.
        if isinstance(raw_reason, str) and re.fullmatch(r"[a-z0-9_]{1,64}", raw_reason):
            reason = raw_reason
        if isinstance(raw_detail, str) and raw_detail.isprintable():
            detail = raw_detail[:200]
    status = response.status_code
    if status >= 500 or reason is None:
        code = EXIT_SERVICE if status >= 500 else EXIT_REFUSED
        message = f"service answered HTTP {status}" + (f": {detail}" if detail else "")
        return LoginFailed(reason or f"http_{status}", message, code)
    if reason == "throttled":
        retry = response.headers.get("Retry-After", "")
        message = "too many attempts" + (f", try again in {retry} s" if retry.isdigit() else "")
    else:
        message = _REFUSALS.get(reason) or f"refused by the service: {detail or reason}"
    return LoginFailed(reason, message, EXIT_REFUSED)


def post_json(client: httpx.Client, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(payload, separators=(",", ":")).encode()
    try:
        response = client.post(path, content=body, headers=_JSON)
    except httpx.TimeoutException as exc:
        raise LoginFailed("service_unreachable", "service did not answer in time", EXIT_SERVICE) from exc
    except httpx.TransportError as exc:
        raise LoginFailed("service_unreachable", f"service unreachable: {exc}", EXIT_SERVICE) from exc
    if not response.is_success:
        raise refusal(response)
    if response.status_code == 204 or not response.content:
        return {}
    try:
        answer = response.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise LoginFailed("service_error", "service answered something that is not JSON", EXIT_SERVICE) from exc
    if not isinstance(answer, dict):
        raise LoginFailed("service_error", "service answered JSON that is not an object", EXIT_SERVICE)
    return answer


def _started(answer: dict[str, Any]) -> tuple[str, bytes]:
    login_id, challenge = answer.get("login_id"), answer.get("challenge")
    if not isinstance(login_id, str) or not _LOGIN_ID.fullmatch(login_id):
        raise LoginFailed("service_error", "service answered without a usable login_id", EXIT_SERVICE)
    try:
        raw = b64url_decode(challenge) if isinstance(challenge, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != CHALLENGE_LEN:
        raise LoginFailed("service_error", "service answered without a 32-byte challenge", EXIT_SERVICE)
    return login_id, raw


def report_abort(client: httpx.Client, path: str, reason: str, tries_left: int | None, card_number: str | None) -> None:
    payload: dict[str, Any] = {"reason": reason}
    if tries_left is not None:
        payload["tries_left"] = tries_left
    if card_number is not None:  # lets the service throttle and audit failures per card
        payload["card_number"] = card_number
    # Best effort: the failure the citizen sees is the card's, not this one.
    with contextlib.suppress(LoginFailed):
        post_json(client, path, payload)


# -- the login -------------------------------------------------------------------------------------------


def card_side(session: CardSession, context: bytes, challenge: bytes, pin: str, seen: dict[str, str]) -> dict[str, str]:
    """The card's answers for a completion body; `seen` gets the card number as soon as it is read."""
    session.select()
    ef05, identification = session.read_identification()
    seen["card_number"] = identification.card_number
    ef06, _ = session.read_holder()
    session.verify_pin(pin)
    response = session.internal_authenticate(challenge, context)
    body = {"ef05": b64url(ef05), "ef06": b64url(ef06), "response": b64url(response)}
    if identification.generation == 3:
        body["certificate"] = b64url(session.read_certificate())
    return body


def classify(exc: CardStatusError | pcsc.ReaderError) -> tuple[str, LoginFailed]:
    """The abort reason for the service and the LoginFailed for the caller, for a card-side failure."""
    if isinstance(exc, WrongPin):
        return "pin_wrong", LoginFailed("pin_wrong", str(exc), EXIT_CARD, tries_left=exc.tries_left)
    if isinstance(exc, PinBlocked):
        return "pin_blocked", LoginFailed("pin_blocked", "PIN blocked", EXIT_CARD)
    if isinstance(exc, pcsc.CardRemoved):
        return "card_removed", LoginFailed("card_removed", "card removed", EXIT_READER)
    if isinstance(exc, CardNotRecognised):
        return "card_not_recognised", LoginFailed("card_not_recognised", str(exc), EXIT_CARD)
    # A card that misbehaves otherwise, or a reader that fails: nothing the protocol names, so "cancelled".
    if isinstance(exc, pcsc.ReaderError):
        return "cancelled", LoginFailed("reader_error", str(exc), EXIT_READER)
    return "cancelled", LoginFailed("card_error", str(exc), EXIT_CARD)


def open_pcsc_reader(reader_name: str, timeout: float) -> pcsc.Reader:
    return pcsc.connect(reader_name, timeout=timeout)


def connect_reader(open_reader: Callable[[str, float], pcsc.Reader], reader_name: str, timeout: float) -> pcsc.Reader:
    try:
        return open_reader(reader_name, timeout)
    except pcsc.ReaderMissing as exc:
        raise LoginFailed("reader_missing", str(exc), EXIT_READER) from exc
    except pcsc.NoCard as exc:
        raise LoginFailed("no_card", str(exc), EXIT_READER) from exc
    except pcsc.ReaderError as exc:
        raise LoginFailed("reader_error", str(exc), EXIT_READER) from exc


def login(
    service_url: str,
    kiosk: KioskConfig,
    reader_name: str,
    pin: str,
    *,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
    open_reader: Callable[[str, float], pcsc.Reader] = open_pcsc_reader,
) -> dict[str, Any]:
    """Log the card holder in; the service's answer plus `"apdus"` (APDUs exchanged with the card).

    `timeout` bounds the wait for a card and each service request. Raises LoginFailed.
    """
    if not is_valid_pin(pin):
        raise LoginFailed("invalid_pin", "a PIN is 4 to 12 digits", EXIT_USAGE)
    card_reader = connect_reader(open_reader, reader_name, timeout)
    with card_reader, kiosk_client(service_url, kiosk, timeout=timeout, transport=transport) as client:
        login_id, challenge = _started(post_json(client, "/v1/kiosk/logins", {}))
        base = f"/v1/kiosk/logins/{login_id}"
        seen: dict[str, str] = {}
        try:
            body = card_side(CardSession(card_reader), kiosk_context(kiosk.terminal_id), challenge, pin, seen)
        except (CardStatusError, pcsc.ReaderError) as exc:
            abort_reason, failure = classify(exc)
            report_abort(client, f"{base}/abort", abort_reason, failure.tries_left, seen.get("card_number"))
            raise failure from exc
        except KeyboardInterrupt:
            report_abort(client, f"{base}/abort", "cancelled", None, seen.get("card_number"))
            raise
        answer = post_json(client, f"{base}/complete", body)
    return {**answer, "apdus": card_reader.apdu_count}
