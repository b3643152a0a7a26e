"""The cardholder's reference photo: we keep only its id in the vendor's gallery (the photo is the vendor's, enrolled
by the card issuer), and the vendor compares the live face with it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from authsvc.liveness import wire
from authsvc.registry import repository
from authsvc.registry.masking import mask_ssn
from authsvc.registry.models import Cardholder
from authsvc.registry.service import RegistryError
from authsvc.registry.ssn import InvalidSSN, normalize


def set_reference_photo(session: Session, *, ssn: str, photo_ref: str | None) -> Cardholder:
    """Set (or with None, clear) a cardholder's reference photo id. Raises RegistryError."""
    if photo_ref is not None and not wire.REFERENCE.fullmatch(photo_ref):
        raise RegistryError("invalid_photo_ref", "a photo reference is 1 to 64 of A-Z a-z 0-9 . _ : -")
    try:
        canonical = normalize(ssn)
    except InvalidSSN as exc:
        raise RegistryError("invalid_ssn", f"social security number: {exc}") from None
    holder = repository.holder_by_ssn(session, canonical)
    if holder is None:
        raise RegistryError("not_found", f"no cardholder {mask_ssn(canonical)}")
    holder.photo_ref = photo_ref
    session.flush()
    return holder
