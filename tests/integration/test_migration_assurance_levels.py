"""Migration 0013 renames stored `acr` values to the level names, both ways, on both databases."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command

from authsvc import migrate
from authsvc.database import make_engine
from tests.fixtures.backends import PG_ADMIN_URL

OLD = ("urn:sscard:acr:card", "urn:sscard:acr:card-pin", "urn:sscard:acr:card-pin-face")
NEW = ("urn:sscard:acr:low", "urn:sscard:acr:substantial", "urn:sscard:acr:high")


@pytest.fixture(params=["postgresql", "embedded"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    if request.param == "embedded":
        engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('m0013') / 'db.sqlite'}")
        yield engine
        engine.dispose()
        return
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"sscard_m0013_{os.getpid()}_{secrets.token_hex(3)}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
    yield engine
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _run(engine: sa.Engine, step: str, revision: str) -> None:
    cfg = migrate.alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        getattr(command, step)(cfg, revision)


def _stored(engine: sa.Engine) -> tuple[list[str], str | None, str, str]:
    with engine.connect() as conn:
        values, ssn_min = conn.execute(sa.text("SELECT acr_values, ssn_min_acr FROM oauth_clients")).one()
        session_acr = conn.execute(sa.text("SELECT acr FROM sso_sessions")).scalar_one()
        grant_acr = conn.execute(sa.text("SELECT acr FROM oauth_grants")).scalar_one()
    if isinstance(values, str):  # SQLite's JSON comes back as text through a plain query
        values = json.loads(values)
    return values, ssn_min, session_acr, grant_acr


def test_stored_levels_are_renamed_and_back(engine: sa.Engine) -> None:
    _run(engine, "upgrade", "0012")
    _insert_rows(engine)
    assert _stored(engine) == (list(OLD[1:]), OLD[2], OLD[1], OLD[0])
    _run(engine, "upgrade", "0013")
    assert _stored(engine) == (list(NEW[1:]), NEW[2], NEW[1], NEW[0])
    _run(engine, "downgrade", "0012")
    assert _stored(engine) == (list(OLD[1:]), OLD[2], OLD[1], OLD[0])


def _table(name: str, *columns: str) -> sa.TableClause:
    json_columns = {"acr_values", "amr", "redirect_uris", "post_logout_redirect_uris", "grant_types", "scopes"}
    return sa.table(name, *(sa.column(c, sa.JSON if c in json_columns else None) for c in columns))


def _insert_rows(engine: sa.Engine) -> None:
    """One client, one session and one grant as they were stored before 0013."""
    now = datetime(2026, 11, 1, tzinfo=UTC)
    client = {
        "client_id": "portal",
        "name": "Portal",
        "status": "active",
        "auth_method": "none",
        "redirect_uris": [],
        "post_logout_redirect_uris": [],
        "grant_types": [],
        "scopes": [],
        "acr_values": list(OLD[1:]),
        "ssn_min_acr": OLD[2],
        "fapi": False,
        "require_dpop": False,
        "subject_type": "public",
        "may_introspect": False,
        "created_at": now,
        "updated_at": now,
    }
    times = {"auth_time": now, "created_at": now, "expires_at": now}
    session = {"sid": "s" * 43, "cookie_digest": "d", "subject": "a" * 32, "acr": OLD[1], "amr": ["sc"], **times}
    grant = {"id": "g" * 32, "client_id": "portal", "subject": "a" * 32, "scope": "openid", "acr": OLD[0]}
    with engine.begin() as conn:
        for name, row in (("oauth_clients", client), ("sso_sessions", session), ("oauth_grants", {**grant, **times})):
            if name == "oauth_grants":
                row["amr"] = ["sc"]
            conn.execute(_table(name, *row).insert().values(**row))
