"""In-process store for the embedded default (one process; nothing shared between workers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence


class MemoryStore:
    def __init__(self, prefix: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self._prefix = prefix
        self._clock = clock
        self._data: dict[str, tuple[bytes | int, float]] = {}
        self._lock = threading.Lock()
        self._ops = 0

    def _live(self, key: str) -> tuple[bytes | int, float] | None:
        entry = self._data.get(key)
        if entry is not None and entry[1] <= self._clock():
            del self._data[key]
            return None
        return entry

    def _sweep(self) -> None:
        # Amortised expiry so that abandoned keys cannot grow the dict without bound.
        self._ops += 1
        if self._ops % 1024 == 0:
            now = self._clock()
            for key in [k for k, (_, exp) in self._data.items() if exp <= now]:
                del self._data[key]

    def put(self, key: str, value: bytes, ttl: int) -> None:
        with self._lock:
            self._sweep()
            self._data[self._prefix + key] = (value, self._clock() + ttl)

    def add(self, key: str, value: bytes, ttl: int) -> bool:
        with self._lock:
            self._sweep()
            full = self._prefix + key
            if self._live(full) is not None:
                return False
            self._data[full] = (value, self._clock() + ttl)
            return True

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._live(self._prefix + key)
            if entry is None:
                return None
            return entry[0] if isinstance(entry[0], bytes) else str(entry[0]).encode()

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self.get(key) for key in keys]

    def take(self, key: str) -> bytes | None:
        with self._lock:
            full = self._prefix + key
            entry = self._live(full)
            if entry is None:
                return None
            del self._data[full]
            value = entry[0]
            return value if isinstance(value, bytes) else str(value).encode()

    def count(self, key: str, ttl: int) -> int:
        with self._lock:
            self._sweep()
            full = self._prefix + key
            entry = self._live(full)
            if entry is None:
                self._data[full] = (1, self._clock() + ttl)
                return 1
            value = int(entry[0]) + 1
            self._data[full] = (value, entry[1])
            return value

    def read_count(self, key: str) -> tuple[int, int]:
        with self._lock:
            entry = self._live(self._prefix + key)
            if entry is None:
                return 0, 0
            return int(entry[0]), max(1, int(entry[1] - self._clock()))

    def ping(self) -> bool:
        return True
