"""2nd-generation issuer master keys: the server derives each card's key from these (docs/card-protocol.md)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from card.cryptogram import SYMMETRIC_ALGORITHMS, diversify_key
from keys import repository
from keys.models import KeyRecord, Purpose
from keys.sealing import Sealer


class MasterKeyMissing(Exception):
    pass


def ensure_master(session: Session, sealer: Sealer, algorithm: str) -> KeyRecord:
    if algorithm not in SYMMETRIC_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(SYMMETRIC_ALGORITHMS)}")
    return repository.ensure_secret(
        session,
        sealer,
        purpose=Purpose.CARD_MASTER,
        label=algorithm,
        algorithm=algorithm,
        kid_prefix=f"mk-{algorithm}",
        size=16,
    )


class MasterKeys:
    """Derives card keys. A master key never changes under its kid, so each worker opens it once."""

    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer
        self._opened: dict[str, tuple[str, bytes]] = {}

    def card_key(self, session: Session, *, kid: str, identification_code: str) -> tuple[str, bytes]:
        """(algorithm, card key) for the card whose key was diversified from master key `kid`."""
        opened = self._opened.get(kid)
        if opened is None:
            record = repository.get(session, kid)
            if record is None or record.purpose != Purpose.CARD_MASTER:
                raise MasterKeyMissing(f"master key {kid} is not known")
            opened = self._opened[kid] = (record.algorithm, self._sealer.open(record.sealed_secret))
        algorithm, master = opened
        return algorithm, diversify_key(master, identification_code, algorithm)
