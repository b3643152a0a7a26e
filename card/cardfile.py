"""The software card's file (`card.json`, format `sscard-softcard/1`): what a real card keeps in its chip.

It holds the card's own keys, the PIN verifier and the retry counter, never an issuer secret. The PIN is
kept as an scrypt verifier so that a copied file does not hand out the PIN directly. The file is rewritten
atomically with mode 0600 on every counter change (see `save`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from card.cryptogram import SYMMETRIC_ALGORITHMS
from card.pinblock import is_valid_pin
from card.records import CardIdentification, HolderData, RecordError

FORMAT = "sscard-softcard/1"
PROTOCOLS = ("T=0", "T=1")
MAX_TRIES = 3
# Fixed parameters: the file format has no field for them. ~16 MiB and tens of ms per check, like a card's
# deliberate slowness, and enough that a stolen file does not give the PIN away in seconds.
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN, SALT_LEN = 2**14, 8, 1, 32, 16
# READ BINARY addresses 15 bits of offset.
MAX_CERTIFICATE_LEN = 0x7FFF
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class CardFileError(ValueError):
    """The card file (or the data to create one) is malformed or inconsistent."""


@dataclass(frozen=True)
class Gen3Secret:
    private_key: ec.EllipticCurvePrivateKey
    certificate_der: bytes


@dataclass(frozen=True)
class Gen2Secret:
    algorithm: str
    key: bytes


def _scrypt(salt: bytes) -> Scrypt:
    return Scrypt(salt=salt, length=SCRYPT_LEN, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)


def _check_gen3(identification: CardIdentification, private_key: Any, certificate_der: Any) -> Gen3Secret:
    if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(private_key.curve, ec.SECP256R1):
        raise CardFileError("a 3rd-generation card key is an EC P-256 private key")
    if not isinstance(certificate_der, bytes) or not 0 < len(certificate_der) <= MAX_CERTIFICATE_LEN:
        raise CardFileError(f"the certificate must be 1 to {MAX_CERTIFICATE_LEN} bytes of DER")
    try:
        certificate = x509.load_der_x509_certificate(certificate_der)
    except ValueError as exc:
        raise CardFileError(f"the certificate is not a DER X.509 certificate: {exc}") from exc
    # A card holding a certificate for another key would fail every login; refuse to build it.
    if certificate.public_key() != private_key.public_key():
        raise CardFileError("the certificate is not for the card's private key")
    if identification.generation != 3:
        raise CardFileError(f"spec_version {identification.spec_version} is not a 3rd-generation card")
    return Gen3Secret(private_key, certificate_der)


def _check_gen2(identification: CardIdentification, algorithm: Any, key: Any) -> Gen2Secret:
    if algorithm not in SYMMETRIC_ALGORITHMS:
        raise CardFileError(f"gen2 algorithm must be one of {', '.join(SYMMETRIC_ALGORITHMS)}")
    if not isinstance(key, bytes) or len(key) != 16:
        raise CardFileError("a 2nd-generation card key is 16 bytes")
    if identification.generation != 2:
        raise CardFileError(f"spec_version {identification.spec_version} is not a 2nd-generation card")
    return Gen2Secret(algorithm, key)


@dataclass
class CardFile:
    identification: CardIdentification
    holder: HolderData
    pin_salt: bytes
    pin_hash: bytes
    tries_left: int
    max_tries: int
    protocol: str
    gen3: Gen3Secret | None = None
    gen2: Gen2Secret | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.identification, CardIdentification) or not isinstance(self.holder, HolderData):
            raise CardFileError("identification and holder must be CardIdentification and HolderData")
        if self.protocol not in PROTOCOLS:
            raise CardFileError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if (self.gen3 is None) == (self.gen2 is None):
            raise CardFileError("a card has exactly one of a gen3 key pair and a gen2 key")
        if self.gen3 is not None:
            _check_gen3(self.identification, self.gen3.private_key, self.gen3.certificate_der)
        if self.gen2 is not None:
            _check_gen2(self.identification, self.gen2.algorithm, self.gen2.key)
        if not isinstance(self.pin_salt, bytes) or len(self.pin_salt) < SALT_LEN:
            raise CardFileError(f"the PIN salt must be at least {SALT_LEN} bytes")
        if not isinstance(self.pin_hash, bytes) or len(self.pin_hash) != SCRYPT_LEN:
            raise CardFileError(f"the PIN hash must be {SCRYPT_LEN} bytes")
        for name in ("tries_left", "max_tries"):
            value = getattr(self, name)
            if type(value) is not int:
                raise CardFileError(f"{name} must be an integer")
        if not 1 <= self.max_tries <= 15 or not 0 <= self.tries_left <= self.max_tries:
            raise CardFileError("need 1 <= max_tries <= 15 and 0 <= tries_left <= max_tries")

    # -- creation and the PIN ------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        *,
        identification: CardIdentification,
        holder: HolderData,
        pin: str,
        protocol: str | None = None,
        gen3_private_key: ec.EllipticCurvePrivateKey | None = None,
        gen3_certificate_der: bytes | None = None,
        gen2_algorithm: str | None = None,
        gen2_key: bytes | None = None,
    ) -> CardFile:
        if not is_valid_pin(pin):
            raise CardFileError("a PIN is 4 to 12 digits")
        has_gen3 = gen3_private_key is not None or gen3_certificate_der is not None
        has_gen2 = gen2_algorithm is not None or gen2_key is not None
        if has_gen3 == has_gen2:
            raise CardFileError("give either gen3_private_key and gen3_certificate_der, or gen2_algorithm and gen2_key")
        gen3 = _check_gen3(identification, gen3_private_key, gen3_certificate_der) if has_gen3 else None
        gen2 = _check_gen2(identification, gen2_algorithm, gen2_key) if has_gen2 else None
        salt = secrets.token_bytes(SALT_LEN)
        return cls(
            identification=identification,
            holder=holder,
            pin_salt=salt,
            pin_hash=_scrypt(salt).derive(pin.encode("ascii")),
            tries_left=MAX_TRIES,
            max_tries=MAX_TRIES,
            protocol=protocol if protocol is not None else ("T=1" if has_gen3 else "T=0"),
            gen3=gen3,
            gen2=gen2,
        )

    @property
    def generation(self) -> int:
        return 3 if self.gen3 is not None else 2

    def check_pin(self, pin: str) -> bool:
        """Whether `pin` is the card's PIN; the comparison is constant-time (inside the KDF's verify)."""
        # The shape is public (4-12 digits), so rejecting other input early leaks nothing.
        if not is_valid_pin(pin):
            return False
        try:
            _scrypt(self.pin_salt).verify(pin.encode("ascii"), self.pin_hash)
        except InvalidKey:
            return False
        return True

    # -- the JSON file -------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        ident, holder = self.identification, self.holder
        doc: dict[str, Any] = {
            "format": FORMAT,
            "protocol": self.protocol,
            "identification": {
                "identification_code": ident.identification_code,
                "card_type": ident.card_type,
                "spec_version": ident.spec_version,
                "issuer_org": ident.issuer_org,
                "issued_on": ident.issued_on.isoformat(),
                "expires_on": ident.expires_on.isoformat(),
                "card_number": ident.card_number,
            },
            "holder": {
                "ssn": holder.ssn,
                "name": holder.name,
                "sex": holder.sex,
                "nation": holder.nation,
                "birth_date": holder.birth_date.isoformat(),
            },
            "pin": {
                "scrypt_salt": base64.b64encode(self.pin_salt).decode(),
                "scrypt_hash": base64.b64encode(self.pin_hash).decode(),
                "tries_left": self.tries_left,
                "max_tries": self.max_tries,
            },
        }
        if self.gen3 is not None:
            pem = self.gen3.private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            doc["gen3"] = {
                "private_key_pem": pem.decode(),
                "certificate_der": base64.b64encode(self.gen3.certificate_der).decode(),
            }
        if self.gen2 is not None:
            doc["gen2"] = {"algorithm": self.gen2.algorithm, "key": self.gen2.key.hex()}
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> CardFile:
        try:
            return _parse(doc)
        except RecordError as exc:
            raise CardFileError(str(exc)) from exc

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the file atomically: a crash leaves either the old or the new counter, never half a file."""
        target = Path(path)
        data = (json.dumps(self.to_json(), ensure_ascii=False, indent=2) + "\n").encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), 0o600)
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        # The rename itself must reach the disk, or a power cut could bring the old counter back.
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CardFile:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise CardFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CardFileError(f"{path}: not a JSON document: {exc}") from exc
        try:
            return cls.from_json(doc)
        except CardFileError as exc:
            raise CardFileError(f"{path}: {exc}") from exc


# -- parsing helpers -----------------------------------------------------------------------------------------


def _obj(doc: Any, key: str, where: str = "") -> dict[str, Any]:
    value = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(value, dict):
        raise CardFileError(f"{where}{key}: expected an object")
    return value


def _str(doc: dict[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise CardFileError(f"{where}.{key}: expected a string")
    return value


def _iso_date(doc: dict[str, Any], key: str, where: str) -> date:
    text = _str(doc, key, where)
    # fromisoformat alone would also take "20260101" and other forms the format does not allow.
    if not _DATE.fullmatch(text):
        raise CardFileError(f"{where}.{key}: expected YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise CardFileError(f"{where}.{key}: {exc}") from exc


def _b64(doc: dict[str, Any], key: str, where: str) -> bytes:
    try:
        return base64.b64decode(_str(doc, key, where), validate=True)
    except binascii.Error as exc:
        raise CardFileError(f"{where}.{key}: not base64") from exc


def _int(doc: dict[str, Any], key: str, where: str) -> int:
    value = doc.get(key)
    if type(value) is not int:
        raise CardFileError(f"{where}.{key}: expected an integer")
    return value


def _parse(doc: Any) -> CardFile:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CardFileError(f"not a software card file (format must be {FORMAT!r})")
    ident_doc, holder_doc, pin_doc = (_obj(doc, k) for k in ("identification", "holder", "pin"))
    identification = CardIdentification(
        identification_code=_str(ident_doc, "identification_code", "identification"),
        card_type=_str(ident_doc, "card_type", "identification"),
        spec_version=_str(ident_doc, "spec_version", "identification"),
        issuer_org=_str(ident_doc, "issuer_org", "identification"),
        issued_on=_iso_date(ident_doc, "issued_on", "identification"),
        expires_on=_iso_date(ident_doc, "expires_on", "identification"),
        card_number=_str(ident_doc, "card_number", "identification"),
    )
    nation = holder_doc.get("nation")
    if nation is not None and not isinstance(nation, str):
        raise CardFileError("holder.nation: expected a string or null")
    holder = HolderData(
        ssn=_str(holder_doc, "ssn", "holder"),
        name=_str(holder_doc, "name", "holder"),
        sex=_str(holder_doc, "sex", "holder"),
        nation=nation,
        birth_date=_iso_date(holder_doc, "birth_date", "holder"),
    )
    gen3 = gen2 = None
    if "gen3" in doc:
        g3 = _obj(doc, "gen3")
        try:
            key = serialization.load_pem_private_key(_str(g3, "private_key_pem", "gen3").encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise CardFileError(f"gen3.private_key_pem: not an unencrypted PEM private key: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CardFileError("gen3.private_key_pem: not an EC private key")
        gen3 = Gen3Secret(key, _b64(g3, "certificate_der", "gen3"))
    if "gen2" in doc:
        g2 = _obj(doc, "gen2")
        try:
            key_bytes = bytes.fromhex(_str(g2, "key", "gen2"))
        except ValueError as exc:
            raise CardFileError("gen2.key: not hexadecimal") from exc
        gen2 = Gen2Secret(_str(g2, "algorithm", "gen2"), key_bytes)
    protocol = doc.get("protocol")
    if not isinstance(protocol, str):
        raise CardFileError("protocol: expected a string")
    return CardFile(
        identification=identification,
        holder=holder,
        pin_salt=_b64(pin_doc, "scrypt_salt", "pin"),
        pin_hash=_b64(pin_doc, "scrypt_hash", "pin"),
        tries_left=_int(pin_doc, "tries_left", "pin"),
        max_tries=_int(pin_doc, "max_tries", "pin"),
        protocol=protocol,
        gen3=gen3,
        gen2=gen2,
    )
