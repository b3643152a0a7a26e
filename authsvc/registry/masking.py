"""Masked forms of identifiers for logs, audit events and displays; full values never leave the registry."""

from __future__ import annotations

from authsvc.registry.ssn import mask as mask_ssn

__all__ = ["mask_card_number", "mask_name", "mask_ssn"]


def mask_name(name: str) -> str:
    if not name:
        return ""
    return name[0] + "*" * (len(name) - 1) if len(name) > 1 else "*"


def mask_card_number(card_number: str) -> str:
    if len(card_number) <= 5:
        return "*" * len(card_number)
    return card_number[:2] + "*" * (len(card_number) - 5) + card_number[-3:]
