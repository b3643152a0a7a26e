"""Login challenges: 32 random bytes, bound to the kiosk and the login, single use, short-lived."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from authsvc.store import Store
from card.cryptogram import CHALLENGE_LEN


@dataclass(frozen=True)
class PendingLogin:
    login_id: str
    terminal_id: str
    challenge: bytes


def _key(terminal_id: str, login_id: str) -> str:
    # The kiosk is part of the key: another kiosk naming this login finds nothing, and cannot spend it.
    return f"login:{terminal_id}:{login_id}"


def start(store: Store, terminal_id: str, ttl: int) -> PendingLogin:
    pending = PendingLogin(secrets.token_urlsafe(24), terminal_id, secrets.token_bytes(CHALLENGE_LEN))
    # The key already names the kiosk and the login: the value is the challenge alone.
    store.put(_key(terminal_id, pending.login_id), pending.challenge, ttl)
    return pending


def take(store: Store, terminal_id: str, login_id: str) -> PendingLogin | None:
    """Spend the challenge: of two concurrent completions of one login only one gets it."""
    if not 16 <= len(login_id) <= 64:
        return None
    raw = store.take(_key(terminal_id, login_id))
    if raw is None:
        return None
    return PendingLogin(login_id, terminal_id, raw)
