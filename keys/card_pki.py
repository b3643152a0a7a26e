"""The card PKI: a national root CA, provincial issuer CAs under it, and 3rd-generation card certificates.

Verification uses the library's RFC 5280 path builder (cryptography.x509.verification) with the Web PKI
profile's CA rules; card certificates carry no subjectAltName, so that one extension is allowed to be absent.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)
from sqlalchemy.orm import Session, sessionmaker

from authsvc.database import lock, unit_of_work, utcnow
from keys import repository
from keys.models import KeyRecord, KeyState, Purpose
from keys.pem import private_pem, public_pem
from keys.sealing import Sealer

ROOT_NAME = "SSCARD National Root CA"
CA_ALGORITHM = "EC-P256"
CA_LIFETIME = timedelta(days=365 * 20)


class CertificateInvalid(Exception):
    pass


def _name(common_name: str, org_unit: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "CN")]
    if org_unit:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, org_unit))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _ca_certificate(
    subject: x509.Name,
    issuer: x509.Name,
    public: ec.EllipticCurvePublicKey,
    signer: ec.EllipticCurvePrivateKey,
    *,
    path_length: int,
    now: datetime,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
        .sign(signer, hashes.SHA256())
    )


def _store(
    sealer: Sealer,
    purpose: Purpose,
    label: str,
    private: ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
    now: datetime,
) -> KeyRecord:
    return KeyRecord(
        kid=f"{purpose.value}-{label or 'cn'}-{secrets.token_hex(4)}",
        purpose=purpose,
        algorithm=CA_ALGORITHM,
        state=KeyState.ACTIVE,
        label=label,
        public_pem=public_pem(private.public_key()),
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        sealed_secret=sealer.seal(private_pem(private)),
        created_at=now,
        activated_at=now,
    )


def _private(sealer: Sealer, record: KeyRecord) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(sealer.open(record.sealed_secret), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _certificate(record: KeyRecord) -> x509.Certificate:
    assert record.certificate_pem is not None
    return x509.load_pem_x509_certificate(record.certificate_pem.encode())


def ensure_root(session: Session, sealer: Sealer) -> KeyRecord:
    lock(session, "keys:root_ca")
    record = repository.active(session, Purpose.ROOT_CA)
    if record is not None:
        return record
    now = utcnow()
    private = ec.generate_private_key(ec.SECP256R1())
    name = _name(ROOT_NAME)
    cert = _ca_certificate(name, name, private.public_key(), private, path_length=1, now=now)
    return repository.add(session, _store(sealer, Purpose.ROOT_CA, "", private, cert, now))


def ensure_issuer(session: Session, sealer: Sealer, province: str) -> KeyRecord:
    """The issuer CA of a province (its 2-digit code plus 0000, e.g. 330000), created under the root on first use."""
    root = ensure_root(session, sealer)
    lock(session, f"keys:issuer_ca:{province}")
    record = repository.active(session, Purpose.ISSUER_CA, label=province)
    if record is not None:
        return record
    now = utcnow()
    private = ec.generate_private_key(ec.SECP256R1())
    cert = _ca_certificate(
        _name(f"SSCARD CA {province}", org_unit=province),
        _certificate(root).subject,
        private.public_key(),
        _private(sealer, root),
        path_length=0,
        now=now,
    )
    return repository.add(session, _store(sealer, Purpose.ISSUER_CA, province, private, cert, now))


def issue_card_certificate(
    session: Session,
    sealer: Sealer,
    *,
    province: str,
    card_public_key: ec.EllipticCurvePublicKey,
    card_number: str,
    identification_code: str,
    not_before: date,
    not_after: date,
) -> bytes:
    issuer = ensure_issuer(session, sealer, province)
    issuer_cert = _certificate(issuer)
    # Names are kept short: the whole certificate must fit two READ BINARY commands (512 bytes).
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.SERIAL_NUMBER, identification_code),
            x509.NameAttribute(NameOID.COMMON_NAME, card_number),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject)
        .public_key(card_public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.combine(not_before, dtime.min, UTC))
        .not_valid_after(min(datetime.combine(not_after, dtime.max, UTC), issuer_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(_private(sealer, issuer).public_key()), critical=False
        )
        .sign(_private(sealer, issuer), hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class VerifiedCard:
    certificate: x509.Certificate
    public_key: ec.EllipticCurvePublicKey
    card_number: str
    identification_code: str


class CardTrust:
    """Trust anchors and issuer CAs, cached per worker for `cache_seconds` (they change only by administration)."""

    def __init__(self, factory: sessionmaker[Session], *, cache_seconds: int) -> None:
        self._factory = factory
        self._cache_seconds = cache_seconds
        self._loaded: tuple[float, Store, list[x509.Certificate]] | None = None
        self._lock = threading.Lock()

    # A card issued under a province's brand-new issuer CA may log in at once: a certificate whose issuer is not
    # in the cache triggers a reload, at most this often, so that bad certificates cannot hammer the database.
    RELOAD_AT_MOST_EVERY = 1.0

    def _material(self, *, refresh: bool = False) -> tuple[Store, list[x509.Certificate]]:
        loaded = self._loaded
        age = time.monotonic() - loaded[0] if loaded is not None else None
        if age is None or age >= self._cache_seconds or (refresh and age >= self.RELOAD_AT_MOST_EVERY):
            with self._lock, unit_of_work(self._factory) as session:
                roots = [
                    _certificate(r)
                    for r in repository.by_purpose(session, Purpose.ROOT_CA)
                    if r.state != KeyState.RETIRED
                ]
                issuers = [
                    _certificate(r)
                    for r in repository.by_purpose(session, Purpose.ISSUER_CA)
                    if r.state != KeyState.RETIRED
                ]
                if not roots:
                    raise CertificateInvalid("no card root CA is configured")
                loaded = self._loaded = (time.monotonic(), Store(roots), issuers)
        return loaded[1], loaded[2]

    def verify(self, certificate_der: bytes, *, now: datetime | None = None) -> VerifiedCard:
        try:
            cert = x509.load_der_x509_certificate(certificate_der)
        except ValueError as exc:
            raise CertificateInvalid("not a DER certificate") from exc
        store, issuers = self._material()
        if not any(issuer.subject == cert.issuer for issuer in issuers):
            store, issuers = self._material(refresh=True)
        ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
            x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
        )
        verifier = (
            PolicyBuilder()
            .store(store)
            .time(now or utcnow())
            .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy)
            .build_client_verifier()
        )
        try:
            verifier.verify(cert, issuers)
        except VerificationError as exc:
            raise CertificateInvalid(f"certificate chain: {exc}") from exc
        public = cert.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
            raise CertificateInvalid("card key is not P-256")
        try:
            card_number = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            code = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value
        except IndexError as exc:
            raise CertificateInvalid("certificate subject lacks card number or identification code") from exc
        return VerifiedCard(cert, public, str(card_number), str(code))
