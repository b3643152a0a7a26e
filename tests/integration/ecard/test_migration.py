"""Migration 0015 creates the e-cards table and takes it away again, on both databases."""

from __future__ import annotations

import sqlalchemy as sa

from tests.integration.test_migration_assurance_levels import _run, engine  # noqa: F401 - the engine fixture


def test_the_ecards_table_comes_and_goes(engine: sa.Engine) -> None:  # noqa: F811 - the fixture
    _run(engine, "upgrade", "0014")
    assert "ecards" not in sa.inspect(engine).get_table_names()
    _run(engine, "upgrade", "0015")
    inspector = sa.inspect(engine)
    assert {c["name"] for c in inspector.get_columns("ecards")} >= {"public_id", "jkt", "card_id", "revoked_reason"}
    unique = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("ecards")}
    assert {("public_id",), ("jkt",)} <= unique
    _run(engine, "downgrade", "0014")
    assert "ecards" not in sa.inspect(engine).get_table_names()
