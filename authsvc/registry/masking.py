"""Masked forms of identifiers for logs, audit events and displays; full values never leave the registry."""

from __future__ import annotations

from authsvc.registry.ssn import mask as mask_ssn

__all__ = ["mask_card_number", "mask_name", "mask_photo_ref", "mask_ssn"]


def mask_name(name: str) -> str:
    if not name:
        return ""
    return name[0] + "*" * (len(name) - 1) if len(name) > 1 else "*"


def mask_card_number(card_number: str) -> str:
    if len(card_number) <= 5:
        return "*" * len(card_number)
    return card_number[:2] + "*" * (len(card_number) - 5) + card_number[-3:]


def mask_photo_ref(photo_ref: str) -> str:
    """A reference photo's id at the liveness vendor: enough to tell two apart in a log, not to look one up."""
    if len(photo_ref) <= 6:
        return "*" * len(photo_ref)
    return photo_ref[:2] + "*" * (len(photo_ref) - 4) + photo_ref[-2:]
