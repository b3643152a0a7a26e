"""Indexes for `authsvc purge` (authsvc/maintenance.py): ended sessions, expired and revoked grants

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # On a large PostgreSQL database, create these by hand first with CREATE INDEX CONCURRENTLY (same names): an
    # existing index is left alone here, and a plain CREATE INDEX would block writes to the table while it builds.
    op.create_index(op.f("ix_sso_sessions_ended_at"), "sso_sessions", ["ended_at"], if_not_exists=True)
    op.create_index(op.f("ix_oauth_grants_expires_at"), "oauth_grants", ["expires_at"], if_not_exists=True)
    op.create_index(op.f("ix_oauth_grants_revoked_at"), "oauth_grants", ["revoked_at"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index(op.f("ix_oauth_grants_revoked_at"), table_name="oauth_grants")
    op.drop_index(op.f("ix_oauth_grants_expires_at"), table_name="oauth_grants")
    op.drop_index(op.f("ix_sso_sessions_ended_at"), table_name="sso_sessions")
