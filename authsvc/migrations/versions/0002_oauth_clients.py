"""oauth clients

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 12:04:46.300066
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "oauth_clients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("auth_method", sa.String(length=32), nullable=False),
        sa.Column("secret_digest", sa.String(length=128), nullable=True),
        sa.Column("jwks", sa.JSON(), nullable=True),
        sa.Column("jwks_uri", sa.Text(), nullable=True),
        sa.Column("redirect_uris", sa.JSON(), nullable=False),
        sa.Column("post_logout_redirect_uris", sa.JSON(), nullable=False),
        sa.Column("grant_types", sa.JSON(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("acr_values", sa.JSON(), nullable=False),
        sa.Column("ssn_min_acr", sa.String(length=64), nullable=True),
        sa.Column("fapi", sa.Boolean(), nullable=False),
        sa.Column("require_dpop", sa.Boolean(), nullable=False),
        sa.Column("subject_type", sa.String(length=16), nullable=False),
        sa.Column("sector_identifier", sa.String(length=255), nullable=True),
        sa.Column("backchannel_logout_uri", sa.Text(), nullable=True),
        sa.Column("may_introspect", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_clients")),
        sa.UniqueConstraint("client_id", name=op.f("uq_oauth_clients_client_id")),
    )


def downgrade() -> None:

    op.drop_table("oauth_clients")
