"""The kiosk proves itself on every request: Ed25519 signature, time window, single-use nonce."""

from __future__ import annotations

import logging
import time
from typing import Annotated

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import Depends, Request

from authsvc.deps import DbSession, RawBody, RuntimeDep
from authsvc.problems import Problem
from authsvc.registry import repository
from authsvc.registry.models import Terminal, TerminalStatus
from card import request_signing

log = logging.getLogger("sscard.kiosk")
CHALLENGE_HEADER = {"WWW-Authenticate": 'Sscard-Signature realm="kiosk"'}


def _refuse(status: int, reason: str, detail: str) -> Problem:
    log.info("kiosk request refused: %s", reason)
    return Problem(status, reason, detail, headers=CHALLENGE_HEADER if status == 401 else None)


def authenticate_terminal(request: Request, runtime: RuntimeDep, session: DbSession, body: RawBody) -> Terminal:
    try:
        signed = request_signing.parse_headers(request.headers)
    except request_signing.SignatureHeaderError as exc:
        raise _refuse(401, exc.reason, str(exc)) from None
    window = runtime.settings.signature_window
    if abs(time.time() - signed.timestamp) > window:
        raise _refuse(401, "timestamp_out_of_window", f"the request was signed more than {window} s from now")
    terminal = repository.terminal(session, signed.terminal_id)
    if terminal is None:
        raise _refuse(401, "terminal_unknown", "no such terminal is registered")
    public = serialization.load_pem_public_key(terminal.public_key_pem.encode())
    assert isinstance(public, Ed25519PublicKey)
    target = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
    if request.scope.get("query_string"):
        target += "?" + request.scope["query_string"].decode("latin-1")
    if not request_signing.verify(public, signed, method=request.method, target=target, body=body):
        raise _refuse(401, "signature_invalid", "the request signature does not verify")
    if terminal.status != TerminalStatus.ACTIVE:
        raise _refuse(403, "terminal_disabled", "this terminal is disabled")
    # Checked last so that only a correctly signed request can spend a nonce.
    if not runtime.store.add(f"nonce:{terminal.id}:{signed.nonce}", b"1", ttl=2 * window + 1):
        raise _refuse(401, "nonce_replayed", "this request was already received")
    return terminal


AuthenticatedTerminal = Annotated[Terminal, Depends(authenticate_terminal)]
