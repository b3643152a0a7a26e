"""DPoP proofs (RFC 9449): what a proof must be to be accepted, and the stateless nonces."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authsvc.oauth.dpop import DPoP, DPoPError, normalise_url, thumbprint
from authsvc.store.memory import MemoryStore
from tests.fixtures.oidc import dpop_proof, jkt_of, new_dpop_key, public_jwk

URL = "https://id.example.gov.cn/token"


class Macs:
    def __init__(self) -> None:
        self.key = b"k" * 32

    def mac(self, label: str, data: bytes) -> bytes:
        return hmac.new(self.key, label.encode() + b"\0" + data, hashlib.sha256).digest()


@pytest.fixture
def dpop() -> DPoP:
    return DPoP(MemoryStore(), Macs(), window=60, nonce_required=False)


def refused(dpop: DPoP, proof: str, error: str = "invalid_dpop_proof", **kwargs: object) -> str:
    with pytest.raises(DPoPError) as caught:
        dpop.verify([proof], **{"method": "POST", "url": URL, **kwargs})  # type: ignore[arg-type]
    assert caught.value.error == error
    return caught.value.description


def test_valid_proof_gives_the_key_thumbprint(dpop: DPoP) -> None:
    key = new_dpop_key()
    proof = dpop.verify([dpop_proof(key, htu=URL)], method="POST", url=URL)
    assert proof is not None and proof.jkt == jkt_of(key)
    assert dpop.verify([], method="POST", url=URL) is None


@pytest.mark.parametrize(
    ("key", "alg"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "PS256"),
        (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    ],
)
def test_other_accepted_algorithms(dpop: DPoP, key: object, alg: str) -> None:
    assert dpop.verify([dpop_proof(key, htu=URL, alg=alg)], method="POST", url=URL) is not None


@pytest.mark.filterwarnings("ignore:authlib.jose module is deprecated")
def test_thumbprint_agrees_with_authlib() -> None:
    from authlib.jose import JsonWebKey

    for key in (new_dpop_key(), rsa.generate_private_key(public_exponent=65537, key_size=2048)):
        jwk = public_jwk(key)
        assert thumbprint(jwk) == JsonWebKey.import_key(jwk).thumbprint()


def test_replayed_proof_is_refused(dpop: DPoP) -> None:
    proof = dpop_proof(new_dpop_key(), htu=URL)
    assert dpop.verify([proof], method="POST", url=URL) is not None
    assert "already used" in refused(dpop, proof)


def test_method_and_url_must_match(dpop: DPoP) -> None:
    key = new_dpop_key()
    assert "htm" in refused(dpop, dpop_proof(key, htu=URL, htm="GET"))
    assert "htu" in refused(dpop, dpop_proof(key, htu="https://id.example.gov.cn/par"))
    assert "htu" in refused(dpop, dpop_proof(key, htu="https://evil.example/token"))
    # Query and fragment are ignored; scheme and host compare case-insensitively, default ports drop out.
    assert dpop.verify([dpop_proof(key, htu="HTTPS://ID.example.gov.cn:443/token?x=1#f")], method="POST", url=URL)


@pytest.mark.parametrize(
    "htu", ["https://id.example.gov.cn:abc/token", "https://id.example.gov.cn:99999/token", "https://[::1/token"]
)
def test_unparseable_htu_is_a_refusal(dpop: DPoP, htu: str) -> None:
    # urllib raises ValueError on these; it must become invalid_dpop_proof (a 400/401), never a 500.
    assert "htu" in refused(dpop, dpop_proof(new_dpop_key(), htu=htu))


def test_iat_window(dpop: DPoP) -> None:
    key = new_dpop_key()
    assert "older" in refused(dpop, dpop_proof(key, htu=URL, now=time.time() - 120))
    assert "future" in refused(dpop, dpop_proof(key, htu=URL, now=time.time() + 120))


def test_header_rules(dpop: DPoP) -> None:
    key = new_dpop_key()
    assert "typ" in refused(dpop, dpop_proof(key, htu=URL, typ="JWT"))
    private = {**public_jwk(key), "d": "AAAA"}
    assert "public key" in refused(dpop, dpop_proof(key, htu=URL, jwk=private))
    other = public_jwk(new_dpop_key())
    assert "does not verify" in refused(dpop, dpop_proof(key, htu=URL, jwk=other))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert "alg must be" in refused(dpop, dpop_proof(rsa_key, htu=URL, alg="RS256"))
    p384 = ec.generate_private_key(ec.SECP384R1())
    assert "alg must be" in refused(dpop, dpop_proof(p384, htu=URL, alg="ES384"))
    assert "P-256" in refused(dpop, dpop_proof(key, htu=URL, jwk={**public_jwk(p384)}))
    with pytest.raises(DPoPError):
        dpop.verify([dpop_proof(key, htu=URL), dpop_proof(key, htu=URL)], method="POST", url=URL)


def test_access_token_hash(dpop: DPoP) -> None:
    key = new_dpop_key()
    assert dpop.verify([dpop_proof(key, htu=URL, access_token="tok")], method="POST", url=URL, access_token="tok")
    assert "ath" in refused(dpop, dpop_proof(key, htu=URL, access_token="other"), access_token="tok")
    assert "ath" in refused(dpop, dpop_proof(key, htu=URL), access_token="tok")


def test_nonces_are_stateless_and_expire() -> None:
    now = 1_800_000_000.0
    dpop = DPoP(MemoryStore(), Macs(), window=60, nonce_required=True)
    other_worker = DPoP(MemoryStore(), Macs(), window=60, nonce_required=True)
    nonce = dpop.nonce(now)
    assert other_worker.nonce_valid(nonce, now + 30) and dpop.nonce_valid(nonce, now + 60)
    assert not dpop.nonce_valid(nonce, now + 150)
    key = new_dpop_key()
    assert "required" in refused(dpop, dpop_proof(key, htu=URL, now=now), "use_dpop_nonce", now=now)
    assert "stale" in refused(dpop, dpop_proof(key, htu=URL, now=now, nonce="made-up"), "use_dpop_nonce", now=now)
    accepted = dpop.verify([dpop_proof(key, htu=URL, now=now, nonce=nonce)], method="POST", url=URL, now=now)
    assert accepted is not None


def test_normalise_url() -> None:
    assert normalise_url("http://127.0.0.1:8000/token?a") == "http://127.0.0.1:8000/token"
    assert normalise_url("http://Example.org:80") == "http://example.org/"
