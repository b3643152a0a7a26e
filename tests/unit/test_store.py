"""The store contract, run against the in-process store and real Redis alike."""

import secrets
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from authsvc.store import Store, open_store
from authsvc.store.memory import MemoryStore
from tests.fixtures.backends import REDIS_URL


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    prefix = f"sscard-test:{secrets.token_hex(6)}:"
    if request.param == "memory":
        yield open_store("memory://", prefix)
        return
    yield open_store(REDIS_URL, prefix)
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)


def test_add_is_single_use(store: Store) -> None:
    assert store.add("n", b"1", 10) is True
    assert store.add("n", b"1", 10) is False


def test_take_returns_the_value_once(store: Store) -> None:
    store.put("c", b"value", 10)
    assert store.take("c") == b"value"
    assert store.take("c") is None
    assert store.take("never") is None


def test_concurrent_takers_get_the_value_exactly_once(store: Store) -> None:
    for round_ in range(20):
        store.put(f"c{round_}", b"v", 10)
        got: list[bytes | None] = []
        barrier = threading.Barrier(8)

        def taker(key: str = f"c{round_}", barrier: threading.Barrier = barrier, got: list = got) -> None:
            barrier.wait()
            got.append(store.take(key))

        threads = [threading.Thread(target=taker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert b"v" in got
        assert sum(v is not None for v in got) == 1


def test_count_keeps_its_window(store: Store) -> None:
    assert store.read_count("f") == (0, 0)
    assert [store.count("f", 100) for _ in range(3)] == [1, 2, 3]
    value, left = store.read_count("f")
    assert value == 3 and 90 <= left <= 100


def test_keys_are_separated_by_prefix() -> None:
    a, b = MemoryStore("a:"), MemoryStore("b:")
    a.put("k", b"1", 10)
    assert b.take("k") is None


def test_values_expire() -> None:
    now = [1000.0]
    store = MemoryStore("", clock=lambda: now[0])
    store.put("c", b"v", 5)
    store.add("n", b"1", 5)
    store.count("f", 5)
    now[0] += 5.01
    assert store.take("c") is None
    assert store.add("n", b"1", 5) is True
    assert store.read_count("f") == (0, 0)


def test_redis_values_expire() -> None:
    s = open_store(REDIS_URL, f"sscard-test:{secrets.token_hex(6)}:")
    s.put("c", b"v", 1)
    assert s.add("n", b"1", 1)
    time.sleep(1.2)
    assert s.take("c") is None
    assert s.add("n", b"1", 1) is True


def test_get_leaves_the_value_and_sees_expiry(store: Store) -> None:
    assert store.get("g") is None
    store.put("g", b"v", 1)
    assert store.get("g") == b"v"
    assert store.get("g") == b"v"
    assert store.take("g") == b"v"
    assert store.get("g") is None
    store.put("h", b"v", 1)
    time.sleep(1.1)
    assert store.get("h") is None


def test_get_many_reads_each_key_in_order(store: Store) -> None:
    store.put("a", b"1", 10)
    store.put("c", b"3", 10)
    assert store.get_many(["a", "b", "c", "a"]) == [b"1", None, b"3", b"1"]
    assert store.get_many([]) == []
    assert store.get("a") == b"1"  # left in place


def test_get_many_sees_expiry() -> None:
    now = [100.0]
    store = MemoryStore("p:", clock=lambda: now[0])
    store.put("short", b"s", 5)
    store.put("long", b"l", 50)
    now[0] += 10
    assert store.get_many(["short", "long"]) == [None, b"l"]


def test_get_many_on_redis_sends_single_key_commands() -> None:
    """No MGET: on Redis Cluster the keys of one call may hash to different slots."""
    store = open_store(REDIS_URL, f"sscard-test:{secrets.token_hex(6)}:")
    sent: list[tuple[object, ...]] = []
    pipeline = store._redis.pipeline  # type: ignore[attr-defined]

    def spying(*args: object, **kwargs: object) -> object:
        pipe = pipeline(*args, **kwargs)
        execute = pipe.execute

        def recorded(*a: object, **k: object) -> object:
            sent.extend(command[0] for command in pipe.command_stack)
            return execute(*a, **k)

        pipe.execute = recorded
        return pipe

    store._redis.pipeline = spying  # type: ignore[attr-defined]
    assert store.get_many(["x", "y"]) == [None, None]
    assert [command[0] for command in sent] == ["GET", "GET"]
