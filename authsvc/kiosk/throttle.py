"""Failure counters per card and per kiosk: past the limit, attempts are refused until the window ends."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from authsvc.store import Store


class Throttled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed attempts; retry after {retry_after} s")
        self.retry_after = retry_after


def _card_key(card_number: str) -> str:
    # Hashed so that the shared store holds no card numbers.
    return "fail:card:" + hashlib.sha256(card_number.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Throttle:
    store: Store
    window: int
    card_limit: int
    terminal_limit: int

    def check_terminal(self, terminal_id: str) -> None:
        count, left = self.store.read_count(f"fail:terminal:{terminal_id}")
        if count >= self.terminal_limit:
            raise Throttled(left)

    def check_card(self, card_number: str) -> None:
        count, left = self.store.read_count(_card_key(card_number))
        if count >= self.card_limit:
            raise Throttled(left)

    def failure(self, *, terminal_id: str | None, card_number: str | None) -> None:
        """Count a failure; `terminal_id` None for attempts that come through no kiosk (a browser login)."""
        if terminal_id:
            self.store.count(f"fail:terminal:{terminal_id}", self.window)
        if card_number:
            self.store.count(_card_key(card_number), self.window)
