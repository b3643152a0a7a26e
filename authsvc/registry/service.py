"""Registry use cases: enrolment, CSV import, card issuance and status, kiosk terminals.

Each function takes the caller's session and only flushes; the caller's unit of work is the commit point.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from authsvc.audit import service as audit
from authsvc.database import lock, utcnow
from authsvc.ecard import service as ecards
from authsvc.registry import repository
from authsvc.registry import ssn as ssn_rules
from authsvc.registry.masking import mask_card_number, mask_ssn
from authsvc.registry.models import Card, Cardholder, CardStatus, Terminal, TerminalStatus
from card.cardfile import CardFile
from card.records import CardIdentification, HolderData
from keys import card_master, card_pki
from keys.pem import private_pem, public_pem
from keys.sealing import Sealer

if TYPE_CHECKING:
    from authsvc.runtime import Runtime

SEXES = {"0", "1", "2", "9"}
SPEC_VERSION = {2: "2.00", 3: "3.00"}
TERMINAL_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class RegistryError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _name(name: str) -> str:
    name = name.strip()
    if not name or not name.isprintable():
        raise RegistryError("invalid_name", "name must be printable and not empty")
    try:
        encoded = name.encode("gb18030")
    except UnicodeEncodeError as exc:
        raise RegistryError("invalid_name", "name must be encodable in GB 18030") from exc
    if len(encoded) > 30:
        raise RegistryError("invalid_name", "name is longer than the card holds (30 bytes in GB 18030)")
    return name


def _region(region: str) -> str:
    if len(region) != 6 or not region.isdigit() or region[0] == "0":
        raise RegistryError("invalid_region", "region code must be 6 digits (GB/T 2260)")
    return region


def validate_holder(ssn: str, name: str, sex: str | None, region_code: str | None) -> Cardholder:
    try:
        canonical = ssn_rules.normalize(ssn)
    except ssn_rules.InvalidSSN as exc:
        raise RegistryError("invalid_ssn", f"social security number: {exc}") from exc
    sex = sex or ssn_rules.sex(canonical)
    if sex not in SEXES:
        raise RegistryError("invalid_sex", "sex must be 0, 1, 2 or 9 (GB/T 2261.1)")
    return Cardholder(
        subject=secrets.token_hex(16),
        ssn=canonical,
        name=_name(name),
        sex=sex,
        birth_date=ssn_rules.birth_date(canonical),
        region_code=_region(region_code or canonical[:6]),
    )


def add_cardholder(
    session: Session, *, ssn: str, name: str, sex: str | None = None, region_code: str | None = None
) -> Cardholder:
    holder = validate_holder(ssn, name, sex, region_code)
    if repository.holder_by_ssn(session, holder.ssn) is not None:
        raise RegistryError("duplicate", f"cardholder {mask_ssn(holder.ssn)} is already registered")
    repository.add(session, holder)
    return holder


@dataclass
class ImportReport:
    added: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def import_csv(session: Session, text: str) -> ImportReport:
    """Header `ssn,name[,sex][,region_code]`. Good rows are added together; bad rows are reported by line."""
    report = ImportReport()
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"ssn", "name"} <= {f.strip() for f in reader.fieldnames}:
        raise RegistryError("invalid_csv", "the first line must be a header with at least ssn and name")
    good: dict[str, tuple[int, Cardholder]] = {}
    for row in reader:
        line = reader.line_num
        try:
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
            holder = validate_holder(
                row.get("ssn", ""), row.get("name", ""), row.get("sex") or None, row.get("region_code") or None
            )
        except RegistryError as exc:
            report.errors.append((line, str(exc)))
            continue
        if holder.ssn in good:
            report.errors.append((line, f"duplicate of line {good[holder.ssn][0]}"))
            continue
        good[holder.ssn] = (line, holder)
    if good:
        existing = set(session.scalars(select(Cardholder.ssn).where(Cardholder.ssn.in_(list(good)))))
        for ssn, (line, holder) in good.items():
            if ssn in existing:
                report.errors.append((line, f"cardholder {mask_ssn(ssn)} is already registered"))
            else:
                session.add(holder)
                report.added += 1
        session.flush()
    report.errors.sort()
    return report


def _new_card_identity(session: Session, region: str) -> tuple[str, str]:
    for _ in range(20):
        number = secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") + f"{secrets.randbelow(10**8):08d}"
        code = region + "D156000005" + secrets.token_hex(8).upper()
        if not repository.number_taken(session, number, code):
            return number, code
    raise RegistryError("exhausted", "could not allocate a free card number")


@dataclass(frozen=True)
class IssuedCard:
    card_number: str
    generation: int
    path: Path


def issue_card(
    session: Session,
    sealer: Sealer,
    *,
    ssn: str,
    generation: int,
    pin: str,
    out: Path,
    algorithm: str = "3des",
    years: int = 10,
    today: date | None = None,
) -> IssuedCard:
    """Personalise a card (keys, certificate, EF05/EF06, PIN), bind it to the holder and write its file."""
    try:
        canonical = ssn_rules.normalize(ssn)
    except ssn_rules.InvalidSSN as exc:
        raise RegistryError("invalid_ssn", f"social security number: {exc}") from exc
    holder = repository.holder_by_ssn(session, canonical)
    if holder is None:
        raise RegistryError("not_found", f"no cardholder {mask_ssn(canonical)}; add them first")
    if generation not in SPEC_VERSION:
        raise RegistryError("invalid_generation", "generation must be 2 or 3")
    if not (pin.isdigit() and 4 <= len(pin) <= 12):
        raise RegistryError("invalid_pin", "PIN must be 4 to 12 digits")
    lock(session, f"cardholder:{holder.id}")  # two concurrent issuances must not both see "no live card"
    live = repository.live_cards(session, holder.id)
    if live:
        raise RegistryError(
            "card_exists",
            f"cardholder already has card {mask_card_number(live[0].card_number)} ({live[0].status}); "
            "report it lost or cancel it first",
        )
    today = today or date.today()
    expires = (
        today.replace(year=today.year + years)
        if not (today.month == 2 and today.day == 29)
        else date(today.year + years, 2, 28)
    )
    number, code = _new_card_identity(session, holder.region_code)
    identification = CardIdentification(
        identification_code=code,
        card_type="1",
        spec_version=SPEC_VERSION[generation],
        issuer_org=holder.region_code,
        issued_on=today,
        expires_on=expires,
        card_number=number,
    )
    holder_data = HolderData(
        ssn=holder.ssn, name=holder.name, sex=holder.sex, nation=None, birth_date=holder.birth_date
    )
    row = Card(
        card_number=number,
        identification_code=code,
        cardholder_id=holder.id,
        generation=generation,
        status=CardStatus.ACTIVE,
        issued_on=today,
        expires_on=expires,
    )
    if generation == 3:
        private = ec.generate_private_key(ec.SECP256R1())
        der = card_pki.issue_card_certificate(
            session,
            sealer,
            province=holder.region_code[:2] + "0000",
            card_public_key=private.public_key(),
            card_number=number,
            identification_code=code,
            not_before=today,
            not_after=expires,
        )
        digest = hashes.Hash(hashes.SHA256())
        digest.update(der)
        row.certificate_sha256 = digest.finalize().hex()
        cardfile = CardFile.create(
            identification=identification,
            holder=holder_data,
            pin=pin,
            gen3_private_key=private,
            gen3_certificate_der=der,
        )
    else:
        master = card_master.ensure_master(session, sealer, algorithm)
        _, key = card_master.MasterKeys(sealer).card_key(session, kid=master.kid, identification_code=code)
        row.key_ref = master.kid
        cardfile = CardFile.create(
            identification=identification, holder=holder_data, pin=pin, gen2_algorithm=algorithm, gen2_key=key
        )
    repository.add(session, row)
    cardfile.save(out)
    return IssuedCard(card_number=number, generation=generation, path=out)


def set_card_status(session: Session, card_number: str, status: str) -> Card:
    try:
        new = CardStatus(status)
    except ValueError as exc:
        raise RegistryError("invalid_status", f"status must be one of {', '.join(CardStatus)}") from exc
    card = repository.card_by_number(session, card_number)
    if card is None:
        raise RegistryError("not_found", f"no card {mask_card_number(card_number)}")
    if card.status == CardStatus.CANCELLED and new != CardStatus.CANCELLED:
        raise RegistryError("invalid_transition", "a cancelled card stays cancelled")
    if card.status == CardStatus.REPORTED_LOST and new not in (CardStatus.REPORTED_LOST, CardStatus.CANCELLED):
        # A card reported lost may have been copied or its PIN watched: it can only be cancelled, by any route
        # (lost → frozen → active included); the citizen gets a new card.
        raise RegistryError("invalid_transition", "a card reported lost can only be cancelled; issue a new card")
    previous = card.status
    card.status = new
    card.status_changed_at = utcnow()
    session.flush()
    audit.record(
        session,
        event="card_status",
        outcome="success",
        card_number=card.card_number,
        subject=card.holder.subject,
        detail={"from": previous, "to": new.value},
    )
    # A card reported lost or cancelled takes the e-cards enrolled with it along, in this same transaction.
    ecards.revoke_for_card(session, card)
    return card


def change_card_status(session: Session, runtime: Runtime, card_number: str, status: str) -> tuple[Card, int]:
    """An operator's card-status change with what follows from it (`set_card_status`: the e-cards enrolled with a
    lost or cancelled card are revoked). A card reported lost also signs its holder out everywhere: whoever signed in
    with it before the report (a card without its PIN reaches level low) loses the session and its portals get
    logout tokens, and every grant of the person is revoked. Returns the card and how many SSO sessions ended."""
    from authsvc.oauth import grants
    from authsvc.sessions import service as sessions

    card = set_card_status(session, card_number, status)
    ended = 0
    if card.status == CardStatus.REPORTED_LOST:
        ended = sessions.end_all(session, runtime, card.holder.subject, why="card_reported_lost")
        # Grants outside any live session too (an app's sign-in whose browser session ended since).
        grants.revoke_subject(session, runtime, card.holder.subject, "card_reported_lost")
    return card, ended


def add_terminal(session: Session, *, terminal_id: str, region_code: str, out: Path, service: str | None) -> Terminal:
    """Register a kiosk and write its credential: the kiosk keeps the private key, we keep the public one."""
    if not (1 <= len(terminal_id) <= 64 and set(terminal_id) <= TERMINAL_ID_CHARS):
        raise RegistryError("invalid_terminal_id", "terminal id: 1 to 64 of A-Z a-z 0-9 - _ .")
    if repository.terminal(session, terminal_id) is not None:
        raise RegistryError("duplicate", f"terminal {terminal_id} is already registered")
    private = Ed25519PrivateKey.generate()
    row = Terminal(
        id=terminal_id,
        region_code=_region(region_code),
        public_key_pem=public_pem(private.public_key()),
        status=TerminalStatus.ACTIVE,
    )
    repository.add(session, row)
    audit.record(session, event="terminal_added", outcome="success", terminal_id=terminal_id)
    credential = {
        "format": "sscard-kiosk/1",
        "terminal_id": terminal_id,
        "private_key_pem": private_pem(private).decode(),
    }
    if service:
        credential["service"] = service
    _write_private(out, json.dumps(credential, indent=2) + "\n")
    return row


def set_terminal_status(session: Session, terminal_id: str, status: str) -> Terminal:
    try:
        new = TerminalStatus(status)
    except ValueError as exc:
        raise RegistryError("invalid_status", f"status must be one of {', '.join(TerminalStatus)}") from exc
    row = repository.terminal(session, terminal_id)
    if row is None:
        raise RegistryError("not_found", f"no terminal {terminal_id}")
    previous = row.status
    row.status = new
    session.flush()
    audit.record(
        session,
        event="terminal_status",
        outcome="success",
        terminal_id=terminal_id,
        detail={"from": previous, "to": new.value},
    )
    return row


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
