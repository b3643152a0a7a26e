from __future__ import annotations

from datetime import timedelta

import jwt
import pytest
from cryptography import x509
from cryptography.fernet import Fernet
from sqlalchemy import select

from authsvc.database import unit_of_work, utcnow
from authsvc.runtime import Runtime
from keys import card_master, card_pki, hmac_keys, repository, signing
from keys.models import KeyRecord, KeyState, Purpose
from keys.sealing import Sealer, SealError
from keys.signing import Keyring, RotationRefused

NO_WAIT = timedelta(0)


def _kids(runtime: Runtime) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with unit_of_work(runtime.sessions) as session:
        for r in repository.by_purpose(session, Purpose.SIGNING):
            out.setdefault(r.state, []).append(r.kid)
    return out


def _rotate(runtime: Runtime, retire_for: timedelta = timedelta(minutes=10)) -> tuple[str, str]:
    with unit_of_work(runtime.sessions) as session:
        return signing.rotate(session, runtime.sealer, retire_for=retire_for, min_next_age=NO_WAIT)


def test_first_start_has_an_active_and_a_published_next_key(runtime: Runtime) -> None:
    kids = _kids(runtime)
    assert len(kids["active"]) == 1 and len(kids["next"]) == 1
    published = {k["kid"] for k in runtime.keyring.jwks()["keys"]}
    assert published == {kids["active"][0], kids["next"][0]}
    assert all(k["kty"] == "EC" and k["crv"] == "P-256" and "d" not in k for k in runtime.keyring.jwks()["keys"])


def test_rotation_signs_with_the_key_that_was_already_published(runtime: Runtime) -> None:
    before = _kids(runtime)
    jwks_before = {k["kid"] for k in runtime.keyring.jwks()["keys"]}
    active, nxt = _rotate(runtime)
    assert active == before["next"][0] and active in jwks_before
    token = runtime.keyring.sign({"sub": "x"})
    assert jwt.get_unverified_header(token)["kid"] == active
    after = {k["kid"]: k for k in runtime.keyring.jwks()["keys"]}
    assert set(after) == {before["active"][0], active, nxt}  # the retired key is still published
    assert jwt.decode(token, jwt.PyJWK(after[active]).key, algorithms=["ES256"])["sub"] == "x"


def test_a_retired_key_leaves_the_jwks_when_its_tokens_have_expired(runtime: Runtime) -> None:
    old = _kids(runtime)["active"][0]
    _rotate(runtime, retire_for=timedelta(seconds=-1))
    assert old not in {k["kid"] for k in runtime.keyring.jwks()["keys"]}


def test_rotation_is_refused_while_the_next_key_is_too_fresh(runtime: Runtime) -> None:
    with pytest.raises(RotationRefused, match="published for less than"), unit_of_work(runtime.sessions) as s:
        signing.rotate(s, runtime.sealer, retire_for=timedelta(minutes=10), min_next_age=timedelta(minutes=5))
    assert len(_kids(runtime)["active"]) == 1


def test_a_cached_keyring_keeps_signing_with_a_key_that_stays_published(runtime: Runtime) -> None:
    cached = Keyring(runtime.sessions, runtime.sealer, cache_seconds=3600)
    first = jwt.get_unverified_header(cached.sign({}))["kid"]
    _rotate(runtime)
    assert jwt.get_unverified_header(cached.sign({}))["kid"] == first
    assert first in {k["kid"] for k in runtime.keyring.jwks()["keys"]}
    cached.refresh()
    assert jwt.get_unverified_header(cached.sign({}))["kid"] != first


def test_private_material_is_sealed_at_rest(runtime: Runtime) -> None:
    with unit_of_work(runtime.sessions) as session:
        card_pki.ensure_issuer(session, runtime.sealer, "110000")
        card_master.ensure_master(session, runtime.sealer, "sm4")
        rows = list(session.scalars(select(KeyRecord)))
    assert {r.purpose for r in rows} == {"signing", "root_ca", "issuer_ca", "card_master", "hmac"}
    assert {r.label for r in rows if r.purpose == "hmac"} == set(hmac_keys.LABELS)  # all made before serving
    for row in rows:
        assert b"PRIVATE KEY" not in row.sealed_secret
        assert runtime.sealer.open(row.sealed_secret)
    wrong = Sealer([Fernet.generate_key()])
    with pytest.raises(SealError, match="key-encryption key"):
        wrong.open(rows[0].sealed_secret)


def test_a_new_key_encryption_key_can_reseal(runtime: Runtime) -> None:
    old = runtime.sealer
    newer = Fernet.generate_key()
    with unit_of_work(runtime.sessions) as session:
        row = repository.active(session, Purpose.SIGNING)
        assert row is not None
        rotated = Sealer([newer, *[k.encode() for k in (runtime.settings.kek or "").split(",")]])
        resealed = rotated.reseal(row.sealed_secret)
    assert Sealer([newer]).open(resealed) == old.open(row.sealed_secret)


def test_issuer_ca_chains_to_the_root_and_card_certificates_verify(runtime: Runtime) -> None:
    from datetime import date

    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    with unit_of_work(runtime.sessions) as session:
        der = card_pki.issue_card_certificate(
            session,
            runtime.sealer,
            province="110000",
            card_public_key=key.public_key(),
            card_number="A12345678",
            identification_code="110105D1560000050123456789ABCDEF",
            not_before=date.today(),
            not_after=date.today() + timedelta(days=3650),
        )
        issuers = repository.by_purpose(session, Purpose.ISSUER_CA)
        assert [r.label for r in issuers] == ["110000"] and issuers[0].state == KeyState.ACTIVE
    assert len(der) <= 512  # two READ BINARY commands (docs/card-protocol.md)
    verified = runtime.card_trust.verify(der)
    assert (verified.card_number, verified.identification_code) == ("A12345678", "110105D1560000050123456789ABCDEF")
    cert = x509.load_der_x509_certificate(der)
    with pytest.raises(card_pki.CertificateInvalid):
        runtime.card_trust.verify(der, now=cert.not_valid_after_utc + timedelta(days=1))
    with pytest.raises(card_pki.CertificateInvalid, match="not a DER"):
        runtime.card_trust.verify(b"\x30\x03junk")
    assert utcnow() < cert.not_valid_after_utc


def test_a_card_under_a_new_provinces_ca_verifies_at_once_despite_the_cache(runtime: Runtime) -> None:
    from datetime import date

    from cryptography.hazmat.primitives.asymmetric import ec

    from keys.card_pki import CardTrust

    trust = CardTrust(runtime.sessions, cache_seconds=3600)

    def card_in(province: str) -> bytes:
        with unit_of_work(runtime.sessions) as session:
            return card_pki.issue_card_certificate(
                session,
                runtime.sealer,
                province=province,
                card_public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
                card_number="A12345678",
                identification_code=province + "D1560000050123456789ABCDEF",
                not_before=date.today(),
                not_after=date.today() + timedelta(days=365),
            )

    trust.verify(card_in("110000"))  # loads and caches the trust material
    trust.RELOAD_AT_MOST_EVERY = 0  # type: ignore[misc]  # no need to wait a second in a test
    assert trust.verify(card_in("330000")).card_number == "A12345678"
