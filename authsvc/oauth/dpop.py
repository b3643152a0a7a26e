"""DPoP (RFC 9449): proofs of possession for sender-constrained tokens.

A proof is a JWT signed by the client's key, carrying that (public) key in its `jwk` header. Checked here: `typ`,
algorithm, key type and size, signature (pyjwt), `htm`, `htu` against the issuer-based URL of the endpoint (the Host
header is never trusted), `iat` within `proof_window`, `jti` single use, `ath` with an access token, and the nonce.

Server nonces are stateless: the HMAC of a time window (`proof_window` seconds), so every worker issues and accepts
the same nonces without shared state. The current and the previous window's nonces are valid.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import jwt

from authsvc.clients.service import MIN_RSA_BITS, PRIVATE_JWK_MEMBERS
from authsvc.oidc.discovery import DPOP_ALGORITHMS
from authsvc.store import Store
from card.request_signing import b64url
from keys import hmac_keys

PROOF_TYP = "dpop+jwt"
MAX_PROOF = 8192
IAT_LEEWAY = 5  # seconds a client's clock may run ahead
MAX_JTI = 256
# What each accepted algorithm may be used with: (kty, crv); RSA keys are at least MIN_RSA_BITS.
KEY_TYPES = {"ES256": ("EC", "P-256"), "PS256": ("RSA", None), "EdDSA": ("OKP", "Ed25519")}
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}


class DPoPError(Exception):
    """`error` is `invalid_dpop_proof` or `use_dpop_nonce` (RFC 9449 §7.1, §8)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class MacSource(Protocol):
    def mac(self, label: str, data: bytes) -> bytes: ...


@dataclass(frozen=True)
class Proof:
    jkt: str  # RFC 7638 thumbprint of the proof's key: what `cnf.jkt` and `dpop_jkt` carry
    jti: str
    iat: int


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256) over the key type's required members, in lexicographic order."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or not all(isinstance(jwk.get(m), str) for m in members):
        raise ValueError("not a public EC, RSA or OKP key")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def access_token_hash(access_token: str) -> str:
    """`ath` (RFC 9449 §4.2): base64url SHA-256 of the access token's ASCII."""
    return b64url(hashlib.sha256(access_token.encode()).digest())


def normalise_url(url: str) -> str:
    """Scheme and host compared case-insensitively, default ports dropped, query and fragment ignored."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or (scheme, port) in (("https", 443), ("http", 80)) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path or '/'}"


class DPoP:
    """Verifies proofs and issues nonces for one worker. `store` holds spent `jti`s; `macs` makes nonces."""

    def __init__(self, store: Store, macs: MacSource, *, window: int, nonce_required: bool) -> None:
        self.store = store
        self.macs = macs
        self.window = window
        self.nonce_required = nonce_required

    def _nonce_for(self, slot: int) -> str:
        return b64url(self.macs.mac(hmac_keys.DPOP_NONCE, slot.to_bytes(8, "big"))[:24])

    def nonce(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        return self._nonce_for(int(now) // self.window)

    def nonce_valid(self, value: str, now: float | None = None) -> bool:
        slot = int(time.time() if now is None else now) // self.window
        # Both compared, whatever the first gives: no timing difference between a current and an old nonce.
        current = hmac.compare_digest(value.encode(), self._nonce_for(slot).encode())
        previous = hmac.compare_digest(value.encode(), self._nonce_for(slot - 1).encode())
        return current or previous

    def verify(
        self,
        headers: Sequence[str],
        *,
        method: str,
        url: str,
        access_token: str | None = None,
        now: float | None = None,
    ) -> Proof | None:
        """The proof in the request's `DPoP` header(s); None when there is none. Raises DPoPError."""
        if not headers:
            return None
        if len(headers) != 1:
            raise DPoPError("invalid_dpop_proof", "send exactly one DPoP header")
        now = time.time() if now is None else now
        proof = headers[0]
        claims, jkt = self._decode(proof)
        if claims.get("htm") != method:
            raise DPoPError("invalid_dpop_proof", "htm does not match the request method")
        htu = claims.get("htu")
        try:
            same_url = isinstance(htu, str) and len(htu) <= 2048 and normalise_url(htu) == normalise_url(url)
        except ValueError:  # urllib refuses a bad port or IPv6 literal: the client's mistake, not a 500
            same_url = False
        if not same_url:
            raise DPoPError("invalid_dpop_proof", "htu does not match the endpoint URL")
        iat = claims.get("iat")
        if (
            not isinstance(iat, int | float)
            or isinstance(iat, bool)
            or not math.isfinite(iat)
            or iat < now - self.window
        ):
            raise DPoPError("invalid_dpop_proof", f"the proof is older than {self.window} s (iat)")
        if iat > now + IAT_LEEWAY:
            raise DPoPError("invalid_dpop_proof", "the proof's iat is in the future")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 1 <= len(jti) <= MAX_JTI:
            raise DPoPError("invalid_dpop_proof", "jti must be a string of 1-256 characters")
        if access_token is not None:
            ath = claims.get("ath")
            if not isinstance(ath, str) or not hmac.compare_digest(
                ath.encode(), access_token_hash(access_token).encode()
            ):
                raise DPoPError("invalid_dpop_proof", "ath does not match the access token")
        nonce = claims.get("nonce")
        if nonce is not None:
            if not isinstance(nonce, str) or len(nonce) > 256 or not self.nonce_valid(nonce, now):
                raise DPoPError("use_dpop_nonce", "the DPoP nonce is stale or unknown; use the one in DPoP-Nonce")
        elif self.nonce_required:
            raise DPoPError("use_dpop_nonce", "a DPoP nonce is required; use the one in DPoP-Nonce")
        # Spent last, so that only an otherwise valid proof uses up its jti.
        spent = hashlib.sha256(jti.encode()).hexdigest()[:32]
        if not self.store.add(f"dpop-jti:{jkt}:{spent}", b"1", self.window + IAT_LEEWAY + 1):
            raise DPoPError("invalid_dpop_proof", "this proof was already used (jti)")
        return Proof(jkt=jkt, jti=jti, iat=int(iat))

    def _decode(self, proof: str) -> tuple[dict[str, Any], str]:
        if len(proof) > MAX_PROOF or proof.count(".") != 2:
            raise DPoPError("invalid_dpop_proof", "the DPoP header is not a JWT")
        try:
            header = jwt.get_unverified_header(proof)
        except jwt.PyJWTError:
            raise DPoPError("invalid_dpop_proof", "the DPoP header is not a JWT") from None
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() != PROOF_TYP:
            raise DPoPError("invalid_dpop_proof", "typ must be dpop+jwt")
        alg = header.get("alg")
        if alg not in DPOP_ALGORITHMS:
            raise DPoPError("invalid_dpop_proof", f"alg must be one of {', '.join(DPOP_ALGORITHMS)}")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict) or PRIVATE_JWK_MEMBERS & set(jwk):
            raise DPoPError("invalid_dpop_proof", "the jwk header must be a public key")
        kty, crv = KEY_TYPES[alg]
        if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
            raise DPoPError("invalid_dpop_proof", f"{alg} needs a {crv or kty} key")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
            if kty == "RSA" and key.key.key_size < MIN_RSA_BITS:
                raise DPoPError("invalid_dpop_proof", f"RSA keys must have at least {MIN_RSA_BITS} bits")
            jkt = thumbprint(jwk)
        except DPoPError:
            raise
        except Exception:  # hostile key material raises assorted errors inside the JOSE library
            raise DPoPError("invalid_dpop_proof", "the jwk header is not a usable key") from None
        try:
            claims = jwt.decode(
                proof,
                key=key.key,
                algorithms=[alg],
                options={
                    "verify_exp": False,
                    "verify_aud": False,
                    "verify_iss": False,
                    "verify_iat": False,  # checked by verify() against its own clock
                    "require": ["iat", "jti", "htm", "htu"],
                },
            )
        except jwt.PyJWTError as exc:
            raise DPoPError("invalid_dpop_proof", f"the proof does not verify ({type(exc).__name__})") from None
        return claims, jkt


def for_runtime(runtime: Any) -> DPoP:
    """The worker's verifier (built once per runtime)."""
    found = runtime.__dict__.get("_dpop")
    if found is None:
        s = runtime.settings
        found = runtime.__dict__["_dpop"] = DPoP(
            runtime.store, runtime.hmac_keys, window=s.proof_window, nonce_required=s.dpop_nonce_required
        )
    return found
