"""`sscard helper`: the kiosk client in desktop mode, for signing in from a browser (the Web eID model).

It listens on the loopback interface for the service's login page. `POST /sign {"login": ID}` is accepted only from
the service's own origin (the browser's `Origin` header; CORS and Private Network Access preflights are answered for
that origin only, and the `Host` header must name the loopback address, against DNS rebinding). The helper then
fetches the pending login's challenge and the portal's name from the service, shows the portal's name on its
terminal, asks for the PIN, has the card sign the challenge with the context of that origin
(`card.cryptogram.web_context`), posts the card's answers to the service and answers the page. The page then sees
the login completed and continues by itself.

PIN: from `--pin-file` (its first line), else from the `SSCARD_PIN` environment variable (both for automation and
tests only: a citizen types it), else asked on the helper's terminal, once per sign-in.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from card import kiosk
from card import reader as pcsc
from card.apdu import CardStatusError
from card.cryptogram import CHALLENGE_LEN, web_context, web_origin
from card.kiosk import EXIT_SERVICE, EXIT_USAGE, LoginFailed
from card.pinblock import is_valid_pin
from card.request_signing import b64url_decode
from card.session import CardSession

DEFAULT_PORT = 24727
PIN_ENV = "SSCARD_PIN"
MAX_BODY = 1024
_LOGIN_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
log = logging.getLogger("sscard.helper")


@dataclass(frozen=True)
class HelperConfig:
    service: str  # the service's base URL; its origin is the only one served
    reader: str
    pin: Callable[[str], str]  # asked with the portal's name
    port: int = DEFAULT_PORT
    timeout: float = 30.0
    transport: httpx.BaseTransport | None = None

    @property
    def origin(self) -> str:
        return web_origin(self.service)


def pin_source(pin_file: str | None, *, environ: dict[str, str] | None = None) -> Callable[[str], str]:
    env = os.environ if environ is None else environ
    if pin_file is not None:

        def from_file(_portal: str) -> str:
            with open(pin_file, encoding="utf-8") as f:
                return f.readline().strip()

        return from_file
    if env.get(PIN_ENV):
        value = env[PIN_ENV]
        return lambda _portal: value
    return lambda portal: getpass.getpass(f"PIN for signing in to {portal}: ")


def _pending(answer: dict[str, Any], origin: str) -> tuple[bytes, str, str]:
    try:
        challenge = b64url_decode(str(answer.get("challenge", "")))
    except ValueError:
        challenge = b""
    portal = answer.get("portal")
    if len(challenge) != CHALLENGE_LEN or not isinstance(portal, str):
        raise LoginFailed("service_error", "service answered without a challenge and a portal name", EXIT_SERVICE)
    if answer.get("origin") != origin:
        # The service verifies with its own origin; signing another would only waste the citizen's PIN entry.
        raise LoginFailed("origin_mismatch", "the service's login page is not at the configured URL", EXIT_USAGE)
    printable = "".join(c for c in portal if c.isprintable())[:128]
    return challenge, printable, str(answer.get("acr", ""))


def sign(
    config: HelperConfig,
    login_id: str,
    *,
    open_reader: Callable[[str, float], pcsc.Reader] | None = None,
) -> dict[str, Any]:
    """Sign the pending login `login_id` with the card, in the context of the service's origin; the service's answer.
    Raises LoginFailed."""
    origin = config.origin
    open_reader = open_reader or kiosk.open_pcsc_reader
    with httpx.Client(base_url=config.service, timeout=config.timeout, transport=config.transport) as http:
        base = f"/login/{login_id}/card"
        try:
            answer = http.get(base, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise LoginFailed("service_unreachable", f"service unreachable: {exc}", EXIT_SERVICE) from exc
        if not answer.is_success:
            raise kiosk.refusal(answer)
        challenge, portal, acr = _pending(answer.json(), origin)
        print(f"sscard helper: 「{portal}」 asks you to sign in ({acr})", file=sys.stderr, flush=True)
        pin = config.pin(portal)
        if not is_valid_pin(pin):
            raise LoginFailed("invalid_pin", "a PIN is 4 to 12 digits", EXIT_USAGE)
        try:
            card_reader = kiosk.connect_reader(open_reader, config.reader, config.timeout)
        except LoginFailed:
            kiosk.report_abort(http, f"{base}/abort", "cancelled", None, None)  # spend the challenge, tell the page
            raise
        seen: dict[str, str] = {}
        with card_reader:
            try:
                body = kiosk.card_side(CardSession(card_reader), web_context(origin), challenge, pin, seen)
            except (CardStatusError, pcsc.ReaderError) as exc:
                abort_reason, failure = kiosk.classify(exc)
                # The card number is not sent: the browser side never throttles on the helper's word.
                kiosk.report_abort(http, f"{base}/abort", abort_reason, failure.tries_left, None)
                raise failure from exc
        return kiosk.post_json(http, base, body)


class _Handler(BaseHTTPRequestHandler):
    server: HelperServer
    protocol_version = "HTTP/1.1"
    timeout = 10  # seconds per socket read: a client that stops sending mid-request must not hold a thread forever

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, payload: dict[str, Any] | None, *, cors: bool) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode() if payload is not None else b""
        self.send_response(status)
        if cors:
            self.send_header("Access-Control-Allow-Origin", self.server.config.origin)
            self.send_header("Vary", "Origin")
        self.send_header("Cache-Control", "no-store")
        if payload is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _allowed(self) -> bool:
        host = (self.headers.get("Host") or "").lower()
        port = self.server.server_address[1]
        loopback = host in (f"127.0.0.1:{port}", f"localhost:{port}")
        return loopback and self.headers.get("Origin") == self.server.config.origin

    def do_OPTIONS(self) -> None:
        if self.path != "/sign" or not self._allowed():
            self._send(403, None, cors=False)
            return
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", self.server.config.origin)
        self.send_header("Access-Control-Allow-Methods", "POST")
        self.send_header("Access-Control-Allow-Headers", "Content-Type")
        self.send_header("Access-Control-Max-Age", "600")
        if self.headers.get("Access-Control-Request-Private-Network") == "true":
            self.send_header("Access-Control-Allow-Private-Network", "true")
        self.send_header("Vary", "Origin")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        if self.path != "/sign":
            self._send(404, {"status": "error", "error": "not_found"}, cors=False)
            return
        if not self._allowed():
            self._send(403, {"status": "error", "error": "origin_refused"}, cors=False)
            return
        length = self.headers.get("Content-Length", "")
        if not (length.isascii() and length.isdigit()) or int(length) > MAX_BODY:  # "²" is a digit int() refuses
            self._send(413, {"status": "error", "error": "body_too_large"}, cors=True)
            return
        try:
            doc = json.loads(self.rfile.read(int(length)))
            login_id = doc["login"] if isinstance(doc, dict) else None
        except (ValueError, KeyError):
            login_id = None
        if not isinstance(login_id, str) or not _LOGIN_ID.fullmatch(login_id):
            self._send(400, {"status": "error", "error": "invalid_request"}, cors=True)
            return
        if not self.server.busy.acquire(blocking=False):  # one card, one sign-in at a time
            busy = {"status": "error", "error": "busy", "message": "another sign-in is in progress"}
            self._send(409, busy, cors=True)
            return
        try:
            answer = sign(self.server.config, login_id, open_reader=self.server.open_reader)
        except LoginFailed as exc:
            print(f"sscard helper: {exc.message}", file=sys.stderr, flush=True)
            self._send(422, {"status": "error", "error": exc.reason, "message": exc.message}, cors=True)
            return
        finally:
            self.server.busy.release()
        acr, more = answer.get("acr"), answer.get("missing") if answer.get("status") == "partial" else None
        said = f"card accepted ({acr}); the page asks for: {', '.join(more)}" if more else f"signed in ({acr})"
        print(f"sscard helper: {said}", file=sys.stderr, flush=True)
        self._send(200, {"status": "ok"}, cors=True)


class HelperServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, config: HelperConfig, *, open_reader: Callable[[str, float], pcsc.Reader] | None = None) -> None:
        self.config = config
        self.open_reader = open_reader
        self.busy = threading.Lock()
        super().__init__(("127.0.0.1", config.port), _Handler)
