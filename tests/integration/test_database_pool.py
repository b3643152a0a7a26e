"""The PostgreSQL pool pings a connection only after it sat idle, and replaces one that no longer answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from authsvc import database
from tests.fixtures.backends import PG_ADMIN_URL


@pytest.fixture
def engine(pg_database: str) -> Iterator[sa.Engine]:
    # Used from one thread, one checkout at a time: the pool opens one connection and hands it back each time.
    engine = database.make_engine(pg_database)
    yield engine
    engine.dispose()


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch, engine: sa.Engine) -> list[int]:
    seen: list[int] = []
    real = engine.dialect.do_ping

    def counting(dbapi_connection):  # type: ignore[no-untyped-def]
        seen.append(1)
        return real(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counting)
    return seen


def _backend_pid(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_in_steady_use_is_not_pinged(engine: sa.Engine, pings: list[int], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(database, "IDLE_PING_SECONDS", 3600.0)
    first = _backend_pid(engine)
    assert [_backend_pid(engine) for _ in range(5)] == [first] * 5
    assert pings == []


def test_an_idle_connection_is_pinged_and_replaced_when_dead(engine: sa.Engine, pings: list[int], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    first = _backend_pid(engine)
    monkeypatch.setattr(database, "IDLE_PING_SECONDS", 0.0)  # every returned connection counts as idle
    assert _backend_pid(engine) == first and len(pings) == 1  # alive: pinged and kept
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar_one()
    admin.dispose()
    # The pooled connection is dead: the ping finds out and the caller gets a new one instead of an error.
    replaced = _backend_pid(engine)
    assert replaced != first and len(pings) == 2
