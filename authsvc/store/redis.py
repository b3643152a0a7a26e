"""Redis store: single-key commands only, so Redis Cluster works as well as a single server."""

from __future__ import annotations

from collections.abc import Sequence

import redis


class RedisStore:
    def __init__(self, url: str, prefix: str) -> None:
        self._prefix = prefix
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30)

    def put(self, key: str, value: bytes, ttl: int) -> None:
        self._redis.set(self._prefix + key, value, ex=ttl)

    def add(self, key: str, value: bytes, ttl: int) -> bool:
        return bool(self._redis.set(self._prefix + key, value, ex=ttl, nx=True))

    def get(self, key: str) -> bytes | None:
        return self._redis.get(self._prefix + key)  # type: ignore[return-value]

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        # A pipeline of single-key GETs rather than MGET: one round trip here, and still valid on Redis Cluster,
        # where MGET fails unless every key hashes to the same slot.
        if len(keys) == 1:  # a pipeline costs more CPU than a plain GET
            return [self.get(keys[0])]
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.get(self._prefix + key)
        return pipe.execute()  # type: ignore[no-any-return]

    def take(self, key: str) -> bytes | None:
        return self._redis.getdel(self._prefix + key)  # type: ignore[return-value]

    def count(self, key: str, ttl: int) -> int:
        full = self._prefix + key
        pipe = self._redis.pipeline(transaction=True)
        pipe.incr(full)
        pipe.expire(full, ttl, nx=True)
        value, _ = pipe.execute()
        return int(value)

    def read_count(self, key: str) -> tuple[int, int]:
        full = self._prefix + key
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(full)
        pipe.ttl(full)
        value, ttl = pipe.execute()
        if value is None:
            return 0, 0
        return int(value), max(1, int(ttl))

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self._redis.close()
