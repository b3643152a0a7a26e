"""A stand-in for the kiosk API (docs/kiosk-api.md) that checks what a kiosk sends, for the client tests.

It verifies every request signature with card.request_signing, refuses reused nonces, and checks the card
evidence of /complete with card.records and card.cryptogram, as the real service does in outline. Canned
refusals (`refuse`) drive the error mapping. The real end-to-end test against authsvc lives elsewhere.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from card import cryptogram
from card.records import CardIdentification, HolderData
from card.request_signing import b64url, b64url_decode, parse_headers, verify
from tests.card.factories import MASTER_KEY, test_ca

ANSWER = {
    "token_type": "Bearer",
    "access_token": "access",
    "id_token": "id",
    "expires_in": 600,
    "acr": "test-acr",
    "amr": ["sc", "hwk", "pin", "mfa"],
}


def problem(status: int, reason: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"type": f"https://sscard.example/problems/{reason}", "title": reason, "status": status, "reason": reason}
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/problem+json", **(headers or {})},
    )


@dataclass
class FakeService:
    kiosk_key: Ed25519PublicKey
    terminal_id: str
    prefix: str = ""
    # step ("start", "complete", "abort") -> canned response
    refuse: dict[str, httpx.Response] = field(default_factory=dict)
    start_answer: dict[str, Any] | None = None
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    nonces: set[str] = field(default_factory=set)
    logins: dict[str, bytes] = field(default_factory=dict)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        target = request.url.raw_path.decode()
        try:
            signed = parse_headers(request.headers)
        except ValueError:
            return problem(401, "signature_malformed")
        if signed.terminal_id != self.terminal_id:
            return problem(401, "terminal_unknown")
        if not verify(self.kiosk_key, signed, method=request.method, target=target, body=request.content):
            return problem(401, "signature_invalid")
        if signed.nonce in self.nonces:
            return problem(401, "nonce_replayed")
        self.nonces.add(signed.nonce)
        assert request.method == "POST" and request.headers["content-type"] == "application/json"
        body = json.loads(request.content)
        match = re.fullmatch(re.escape(self.prefix) + r"/v1/kiosk/logins(?:/([^/]+)/(complete|abort))?", target)
        assert match, target
        step = match.group(2) or "start"
        self.requests.append((step, body))
        if step in self.refuse:
            return self.refuse[step]
        if step == "start":
            assert body == {}
            login_id = secrets.token_urlsafe(12)
            self.logins[login_id] = secrets.token_bytes(32)
            answer = self.start_answer or {
                "login_id": login_id,
                "challenge": b64url(self.logins[login_id]),
                "expires_in": 60,
            }
            return httpx.Response(201, json=answer)
        challenge = self.logins.pop(match.group(1), None)
        if challenge is None:
            return problem(404, "login_unknown")
        if step == "abort":
            return httpx.Response(204)
        return self._complete(challenge, body)

    def _complete(self, challenge: bytes, body: dict[str, Any]) -> httpx.Response:
        ef05, ef06 = b64url_decode(body["ef05"]), b64url_decode(body["ef06"])
        response = b64url_decode(body["response"])
        ident, holder = CardIdentification.decode(ef05), HolderData.decode(ef06)
        flags, mac = response[0], response[1:]
        message = cryptogram.auth_message(
            challenge=challenge,
            context=cryptogram.kiosk_context(self.terminal_id),
            digest=cryptogram.files_digest(ef05, ef06),
            flags=flags,
        )
        if ident.generation == 3:
            cert = x509.load_der_x509_certificate(b64url_decode(body["certificate"]))
            ca_public = test_ca()[1].public_key()
            assert isinstance(ca_public, ec.EllipticCurvePublicKey)
            try:
                ca_public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                return problem(422, "certificate_invalid")
            public = cert.public_key()
            assert isinstance(public, ec.EllipticCurvePublicKey)
            ok = cryptogram.verify_message(public, message, mac)
        else:
            assert "certificate" not in body
            algorithm = "3des" if len(mac) == 8 else "sm4"
            key = cryptogram.diversify_key(MASTER_KEY, ident.identification_code, algorithm)
            ok = cryptogram.verify_symmetric_cryptogram(key, algorithm, message, mac)
        if not ok:
            return problem(422, "cryptogram_invalid")
        identity = {
            "subject": "s" * 32,
            "name": holder.name[0] + "*",
            "ssn": holder.ssn[:6] + "********" + holder.ssn[14:],
            "card_number": ident.card_number,
            "generation": ident.generation,
            "pin": bool(flags & 1),
        }
        return httpx.Response(200, json={**ANSWER, "identity": identity})
