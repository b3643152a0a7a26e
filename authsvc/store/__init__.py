"""Short-lived shared state: challenges, nonces, failure counters.

Every operation touches a single key, so the Redis implementation works on Redis Cluster unchanged (`get_many` is
several single-key GETs sent together, not an MGET, which Redis Cluster refuses across slots). The in-process
implementation serves the single-process embedded default only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Store(Protocol):
    def put(self, key: str, value: bytes, ttl: int) -> None:
        """Set `key` to `value` for `ttl` seconds, replacing what was there."""

    def add(self, key: str, value: bytes, ttl: int) -> bool:
        """Set `key` only if absent; False if it was present (the single-use primitive)."""

    def get(self, key: str) -> bytes | None:
        """The value, left in place (None when absent or expired)."""

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """`get` of each key, in order, in one round trip; not a snapshot (each read is on its own)."""

    def take(self, key: str) -> bytes | None:
        """Atomically get and delete: of two concurrent takers only one receives the value."""

    def count(self, key: str, ttl: int) -> int:
        """Increment a counter; the window starts at the first increment and lasts `ttl` seconds."""

    def read_count(self, key: str) -> tuple[int, int]:
        """The counter's value and the seconds left in its window (0, 0 when absent)."""

    def ping(self) -> bool: ...


def open_store(url: str, prefix: str) -> Store:
    if url.startswith("memory://"):
        from authsvc.store.memory import MemoryStore

        return MemoryStore(prefix)
    from authsvc.store.redis import RedisStore

    return RedisStore(url, prefix)
