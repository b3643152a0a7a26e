"""The reference e-card client: a command-line stand-in for the electronic social security card app on a phone.

Its device key (P-256) lives in a PEM file with 0600 permissions, the stand-in for the phone's non-exportable key
store; beside it, `<key>.state.json` keeps what enrolment returned (the issuer and the e-card id). What it does:

- `enrol`: the RFC 8252 native-app sign-in (authorization code with PKCE, a loopback redirect listener on
  127.0.0.1 on a port of its own, the authorization URL printed for the citizen to open in a browser, where they
  sign in at the highest level), then the enrolment: a challenge from the service, signed with the device key
  over card/ecard_protocol.enrol_message. `access_token` skips the sign-in for a token obtained elsewhere.
- `sign_in`: scan a login page's QR URL, accepted only on the origin the e-card was enrolled with (a QR code from
  any other site is refused before anything is sent); show the portal's name; on approval sign the login's
  challenge bound to that login and portal (card/ecard_protocol.signin_message). When the portal's level also
  needs a face check, the service answers with the vendor's capture URL, which is handed to the citizen.
- `list_ecards`, `revoke`: the holder's own e-cards, with an access token (scope `ecard`).

Only httpx and cryptography, like the rest of card/: nothing here imports the server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import secrets
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from card import ecard_protocol as protocol
from card.cryptogram import web_origin
from card.kiosk import EXIT_REFUSED, EXIT_SERVICE, EXIT_USAGE

SCOPE = "openid ecard"
HIGH = "urn:sscard:acr:high"
QR_PATH = "/ecard/scan"
# How recent the highest-level login must be when enrolling: well within the service's default (600 s).
ENROL_MAX_AGE = 300


class EcardError(Exception):
    """A failure to report: `reason` machine-readable, `exit_code` as the other sscard commands use them."""

    def __init__(self, reason: str, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.exit_code = exit_code


# -- the device key and the state beside it ---------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_or_create_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The device key: created on first use (0600); refused if others may read it, as a key store would not be."""
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(path, pem)
        return key
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise EcardError("key_exposed", f"{path} is readable by others (mode {mode:o}); it must be 0600", EXIT_USAGE)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError:
        raise EcardError("key_unreadable", f"{path} is not a PEM private key", EXIT_USAGE) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise EcardError("key_unreadable", f"{path} is not a P-256 key", EXIT_USAGE)
    return key


def state_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + ".state.json")


@dataclass(frozen=True)
class State:
    issuer: str
    ecard_id: str

    @property
    def origin(self) -> str:
        return web_origin(self.issuer)


def load_state(key_path: Path) -> State:
    path = state_path(key_path)
    try:
        doc = json.loads(path.read_text())
        return State(issuer=str(doc["issuer"]), ecard_id=str(doc["ecard_id"]))
    except (OSError, ValueError, KeyError, TypeError):
        raise EcardError(
            "not_enrolled", f"no e-card enrolled with this key ({path} missing or unreadable)", EXIT_USAGE
        ) from None


def save_state(key_path: Path, state: State) -> None:
    doc = {"issuer": state.issuer, "ecard_id": state.ecard_id}
    _write_private(state_path(key_path), (json.dumps(doc, indent=2) + "\n").encode())


# -- talking to the service -------------------------------------------------------------------------------


def _problem(answer: httpx.Response) -> EcardError:
    try:
        doc = answer.json()
    except ValueError:
        doc = {}
    reason = str(doc.get("reason") or doc.get("error") or f"http_{answer.status_code}")
    detail = str(doc.get("detail") or doc.get("error_description") or answer.reason_phrase)
    return EcardError(reason, detail, EXIT_REFUSED if 400 <= answer.status_code < 500 else EXIT_SERVICE)


def _call(http: httpx.Client, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    try:
        answer = http.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise EcardError("service_unreachable", f"{url}: {type(exc).__name__}", EXIT_SERVICE) from None
    if answer.status_code >= 400:
        raise _problem(answer)
    try:
        doc = answer.json()
    except ValueError:
        raise EcardError("bad_answer", f"{url} did not answer JSON", EXIT_SERVICE) from None
    if not isinstance(doc, dict):
        raise EcardError("bad_answer", f"{url} did not answer a JSON object", EXIT_SERVICE)
    return doc


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- RFC 8252 native-app sign-in ---------------------------------------------------------------------------


class _Callback(BaseHTTPRequestHandler):
    results: queue.Queue[dict[str, str]]

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != "/callback":
            self.send_error(404)
            return
        self.results.put({k: v[0] for k, v in parse_qs(parts.query).items()})
        body = "已完成，请回到电子社保卡应用。Done: return to the e-card app.".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def native_sign_in(
    issuer: str,
    client_id: str,
    *,
    show_url: Callable[[str], None],
    acr: str | None = HIGH,
    max_age: int | None = ENROL_MAX_AGE,
    timeout: float = 300.0,
    transport: httpx.BaseTransport | None = None,
) -> str:
    """An access token for the app (RFC 8252): PKCE S256, state, a loopback listener on 127.0.0.1 (any port, the
    registered URI has none), `iss` checked in the response (RFC 9207). Returns the access token."""
    verifier = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    results: queue.Queue[dict[str, str]] = queue.Queue()
    handler = type("Callback", (_Callback,), {"results": results})
    server = HTTPServer(("127.0.0.1", 0), handler)
    redirect_uri = f"http://127.0.0.1:{server.server_address[1]}/callback"
    with httpx.Client(timeout=30.0, transport=transport) as http:
        meta = _call(http, "GET", f"{issuer}/.well-known/openid-configuration")
        if meta.get("issuer") != issuer:
            raise EcardError("issuer_mismatch", f"{issuer} names itself {meta.get('issuer')!r}", EXIT_SERVICE)
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": SCOPE,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if acr is not None:
            params["acr_values"] = acr
        if max_age is not None:
            params["max_age"] = str(max_age)
        show_url(f"{meta['authorization_endpoint']}?{urlencode(params)}")
        server.timeout = 1.0
        deadline = timeout
        try:
            while results.empty() and deadline > 0:
                server.handle_request()
                deadline -= 1.0
        finally:
            server.server_close()
        if results.empty():
            raise EcardError("timeout", "the sign-in did not come back in time", EXIT_REFUSED)
        answer = results.get()
        if answer.get("state") != state or answer.get("iss") != issuer:
            raise EcardError("invalid_response", "the authorization response is not for this sign-in", EXIT_REFUSED)
        if "code" not in answer:
            raise EcardError(answer.get("error", "access_denied"), answer.get("error_description", ""), EXIT_REFUSED)
        tokens = _call(
            http,
            "POST",
            str(meta["token_endpoint"]),
            data={
                "grant_type": "authorization_code",
                "code": answer["code"],
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
                "client_id": client_id,
            },
        )
    return str(tokens["access_token"])


# -- enrolment, sign-in, list, revoke ----------------------------------------------------------------------


def enrol(
    issuer: str,
    key_path: Path,
    access_token: str,
    *,
    device_name: str,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """Enrol the device key (created if absent) for the person the access token is of; saves the state."""
    issuer = issuer.rstrip("/")
    key = load_or_create_key(key_path)
    jwk = protocol.public_jwk(key.public_key())
    with httpx.Client(timeout=30.0, transport=transport) as http:
        got = _call(http, "POST", f"{issuer}/v1/ecards/enrolment-challenge", headers=_bearer(access_token))
        challenge = str(got["challenge"])
        message = protocol.enrol_message(issuer=issuer, challenge=challenge, key_thumbprint=protocol.thumbprint(jwk))
        body = {
            "public_key": jwk,
            "device_name": device_name,
            "challenge": challenge,
            "signature": protocol.sign(key, message),
        }
        ecard = _call(http, "POST", f"{issuer}/v1/ecards", json=body, headers=_bearer(access_token))
    save_state(key_path, State(issuer=issuer, ecard_id=str(ecard["id"])))
    return ecard


@dataclass(frozen=True)
class ScannedQr:
    login_id: str
    token: str


def read_qr(url: str, state: State) -> ScannedQr:
    """The login and token of a QR URL, only if it is the enrolled service's own: a code shown by another site (a
    phishing copy of the login page) is refused here, before anything is sent anywhere."""
    try:
        origin = web_origin(url)
    except ValueError:
        raise EcardError("qr_foreign", "this QR code is not an e-card sign-in", EXIT_REFUSED) from None
    parts = urlsplit(url)
    if origin != state.origin or parts.path != urlsplit(state.issuer).path + QR_PATH:
        raise EcardError("qr_foreign", f"this QR code is not from {state.origin}: not signing", EXIT_REFUSED)
    query = parse_qs(parts.query)
    login, token = query.get("l", [""])[0], query.get("t", [""])[0]
    if not login or not token:
        raise EcardError("qr_foreign", "this QR code is not an e-card sign-in", EXIT_REFUSED)
    return ScannedQr(login, token)


def sign_in(
    qr_url: str,
    key_path: Path,
    *,
    confirm: Callable[[dict[str, Any]], bool],
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """Scan, show, sign. `confirm` sees the scan's answer (portal name, client_id, level) and decides; the result is
    the service's answer: {"status": "done"} or {"status": "partial", "face": {"capture_url": ...}, ...}."""
    state = load_state(key_path)
    key = load_or_create_key(key_path)
    qr = read_qr(qr_url, state)
    with httpx.Client(timeout=30.0, transport=transport) as http:
        scanned = _call(
            http,
            "POST",
            f"{state.issuer}/v1/ecard/sign-ins/scan",
            json={"login_id": qr.login_id, "qr_token": qr.token},
        )
        if scanned.get("origin") != state.origin or scanned.get("login_id") != qr.login_id:
            raise EcardError("qr_foreign", "the service's answer is not for this sign-in", EXIT_REFUSED)
        if not confirm(scanned):
            raise EcardError("declined", "not approved", EXIT_REFUSED)
        message = protocol.signin_message(
            origin=state.origin,
            login_id=qr.login_id,
            client_id=str(scanned["client_id"]),
            challenge=str(scanned["challenge"]),
            ecard_id=state.ecard_id,
        )
        body = {"ecard_id": state.ecard_id, "signature": protocol.sign(key, message)}
        return _call(http, "POST", f"{state.issuer}/v1/ecard/sign-ins/{qr.login_id}", json=body)


def list_ecards(issuer: str, access_token: str, *, transport: httpx.BaseTransport | None = None) -> list[Any]:
    with httpx.Client(timeout=30.0, transport=transport) as http:
        doc = _call(http, "GET", f"{issuer.rstrip('/')}/v1/ecards", headers=_bearer(access_token))
    return list(doc.get("ecards", []))


def revoke(
    issuer: str, access_token: str, ecard_id: str, *, transport: httpx.BaseTransport | None = None
) -> dict[str, Any]:
    with httpx.Client(timeout=30.0, transport=transport) as http:
        path = f"/v1/ecards/{quote(ecard_id, safe='')}"  # an id, never a path of its own
        return _call(http, "DELETE", issuer.rstrip("/") + path, headers=_bearer(access_token))
