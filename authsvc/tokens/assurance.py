"""The assurance policy: which checks a login achieved, the level (`acr`) they reach and the methods (`amr`, RFC
8176) reported. Pure rules, the one place they live; docs/assurance.md explains them and their eIDAS / NIST mapping.

Checks, as `amr` values:
- `sc`   a genuine social security card answered a fresh challenge (实卡: possession).
- `hwk`  a hardware-held private key signed: a 3rd-generation card's own key pair, or an e-card's device key
         (the phone's non-exportable key store). An e-card alone is `hwk` without `sc`.
- `pin`  the card checked its PIN (knowledge). Only the card can attest it, so it counts only with `sc`.
- `face` a liveness vendor saw a live face matching the registry photo (实人: inherence).
Every login identifies a registered cardholder (实名): a card or an e-card names somebody in the registry, and a
face check is only ever run against the photo of a person a possession factor identified.

Levels, lowest first; a relying party that asks for a level accepts any level above it:
- LOW          `urn:sscard:acr:low`          real-name: one possession factor (an e-card; a card without PIN would be,
                                              but the card authenticators always verify the PIN: kiosk/proof.py).
- SUBSTANTIAL  `urn:sscard:acr:substantial`  two independent checks: card + PIN, or card / e-card + face.
- HIGH         `urn:sscard:acr:high`         card with PIN, plus face.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import combinations

LOW = "urn:sscard:acr:low"
SUBSTANTIAL = "urn:sscard:acr:substantial"
HIGH = "urn:sscard:acr:high"
LEVELS = (LOW, SUBSTANTIAL, HIGH)

SC, HWK, PIN, FACE, MFA = "sc", "hwk", "pin", "face", "mfa"
_ORDER = (SC, HWK, PIN, FACE, MFA)

# Login methods, and the checks each can prove at best (a 2nd-generation card proves `sc` without `hwk`).
METHOD_CARD = "card"
METHOD_ECARD = "ecard"
METHOD_FACE = "face"
METHOD_CHECKS: dict[str, frozenset[str]] = {
    METHOD_CARD: frozenset({SC, PIN}),
    METHOD_ECARD: frozenset({HWK}),
    METHOD_FACE: frozenset({FACE}),
}


def _possession(checks: frozenset[str]) -> bool:
    return SC in checks or HWK in checks


def _level(checks: frozenset[str]) -> str | None:
    card_pin = SC in checks and PIN in checks
    if card_pin and FACE in checks:
        return HIGH
    if card_pin or (_possession(checks) and FACE in checks):
        return SUBSTANTIAL
    if _possession(checks):
        return LOW
    return None


def grade(amr: Iterable[str]) -> tuple[str | None, list[str]]:
    """The level these checks reach (None: nothing a login can stand on) and the `amr` to report: the known checks
    in a stable order, with `mfa` when two kinds of factor (possession and knowledge or inherence) were proven."""
    checks = frozenset(amr) & frozenset(_ORDER[:-1])
    if PIN in checks and SC not in checks:  # a PIN nobody but a card could have checked counts for nothing
        checks -= {PIN}
    reported = [m for m in _ORDER[:-1] if m in checks]
    if _possession(checks) and (PIN in checks or FACE in checks):
        reported.append(MFA)
    return _level(checks), reported


def rank(level: str | None) -> int:
    """0 for no level, then 1, 2, 3; unknown values rank 0 (they satisfy nothing)."""
    return LEVELS.index(level) + 1 if level in LEVELS else 0


def satisfies(reached: str | None, required: str) -> bool:
    return required in LEVELS and rank(reached) >= rank(required)


def card_amr(*, generation: int, pin_verified: bool) -> list[str]:
    # RFC 8176 `hwk`: proof of possession of a hardware-secured key — a 3rd-generation card's own private key. A
    # 2nd-generation card proves a key diversified from a master key the issuer also holds, which is not.
    amr = [SC, HWK] if generation == 3 else [SC]
    return [*amr, PIN] if pin_verified else amr


def card_login(*, generation: int, pin_verified: bool) -> tuple[str, list[str]]:
    """A card login on its own (kiosk, card channel): its level and amr."""
    level, amr = grade(card_amr(generation=generation, pin_verified=pin_verified))
    assert level is not None  # a card is always a possession factor
    return level, amr


def missing(amr: Iterable[str], wanted: str, *, among: Iterable[str] | None = None) -> list[str]:
    """The methods worth offering next to a login that has proven `amr` and must reach `wanted`: the first steps of
    the smallest sets of methods that get there. A face check needs a possession factor first (it is compared with
    the photo of the person that factor identified), so it is offered only then. Empty once `wanted` is reached.
    `among`: the methods a deployment has (default all); the sets are chosen among them only, so a method that gets
    nowhere without a missing one is not offered, and a level out of reach offers nothing."""
    have = frozenset(amr)
    if satisfies(grade(have)[0], wanted):
        return []
    there = frozenset(METHOD_CHECKS if among is None else among)
    methods = [m for m in METHOD_CHECKS if m in there and not METHOD_CHECKS[m] <= have]
    enough: list[frozenset[str]] = []
    for size in range(1, len(methods) + 1):
        for chosen in combinations(methods, size):
            if any(smaller <= frozenset(chosen) for smaller in enough):
                continue  # not minimal: a subset already gets there
            proven = have.union(*(METHOD_CHECKS[m] for m in chosen))
            if satisfies(grade(proven)[0], wanted):
                enough.append(frozenset(chosen))
    offered = {
        m
        for chosen in enough
        for m in chosen
        if m != METHOD_FACE or _possession(have)  # face can come first only if somebody is already identified
    }
    return [m for m in METHOD_CHECKS if m in offered]
