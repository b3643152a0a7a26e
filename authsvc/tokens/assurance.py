"""Assurance levels (`acr`) and authentication methods (`amr`, RFC 8176) reached by a login. Pure rules.

Levels, lowest first; a relying party that asks for a level accepts any level above it:
- `urn:sscard:acr:card` — possession of a genuine card, no PIN.
- `urn:sscard:acr:card-pin` — card and PIN: two factors, the card attests the PIN check itself.
- `urn:sscard:acr:card-pin-face` — card, PIN and a live face matching the registry photo (a later issue).
"""

from __future__ import annotations

ACR_CARD = "urn:sscard:acr:card"
ACR_CARD_PIN = "urn:sscard:acr:card-pin"
ACR_CARD_PIN_FACE = "urn:sscard:acr:card-pin-face"
LEVELS = (ACR_CARD, ACR_CARD_PIN, ACR_CARD_PIN_FACE)


def card_login(*, generation: int, pin_verified: bool) -> tuple[str, list[str]]:
    # RFC 8176: `sc` smart card; `hwk` proof of possession of a hardware-secured key — a 3rd-generation card's
    # own private key. A 2nd-generation card proves a key diversified from a master key the issuer also holds,
    # which is not proof of possession in the `hwk` sense.
    amr = ["sc", "hwk"] if generation == 3 else ["sc"]
    if pin_verified:
        amr += ["pin", "mfa"]
        return ACR_CARD_PIN, amr
    return ACR_CARD, amr


def satisfies(reached: str, required: str) -> bool:
    if reached not in LEVELS or required not in LEVELS:
        return False
    return LEVELS.index(reached) >= LEVELS.index(required)
