"""Migration 0014 creates the liveness sessions (with the indexes the callback and `authsvc purge` use) and the
cardholders' photo reference, and takes them away again, on both databases."""

from __future__ import annotations

import sqlalchemy as sa

from tests.integration.test_migration_assurance_levels import _run, engine  # noqa: F401 - the engine fixture


def test_the_liveness_sessions_and_the_photo_reference_come_and_go(engine: sa.Engine) -> None:  # noqa: F811
    _run(engine, "upgrade", "0013")
    assert "liveness_sessions" not in sa.inspect(engine).get_table_names()
    _run(engine, "upgrade", "0014")
    inspector = sa.inspect(engine)
    indexed = {tuple(i["column_names"]) for i in inspector.get_indexes("liveness_sessions")}
    assert {("login_id",), ("expires_at",)} <= indexed
    unique = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("liveness_sessions")}
    assert {("biz_ref",), ("vendor", "vendor_session_id")} <= unique
    assert "photo_ref" in {c["name"] for c in inspector.get_columns("cardholders")}
    _run(engine, "downgrade", "0013")
    inspector = sa.inspect(engine)
    assert "liveness_sessions" not in inspector.get_table_names()
    assert "photo_ref" not in {c["name"] for c in inspector.get_columns("cardholders")}
