"""Real-person: liveness sessions and vendor verdicts; the cardholder's reference photo id (helper: liveness)

`liveness_sessions` is the durable record of every face check a login started at the vendor and the verdict it got
(authsvc/liveness/models.py); `cardholders.photo_ref` names the cardholder's reference photo in the vendor's gallery
(the vendor compares the live face with it; we never hold the photo). Without one, no face check can be started.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "liveness_sessions",
        sa.Column("id", ID, nullable=False),
        sa.Column("biz_ref", sa.String(length=64), nullable=False),
        sa.Column("vendor", sa.String(length=32), nullable=False),
        sa.Column("vendor_session_id", sa.String(length=64), nullable=False),
        sa.Column("login_id", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=32), nullable=False),
        sa.Column("reference_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verdict_digest", sa.String(length=64), nullable=True),
        sa.Column("live", sa.Boolean(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("verdict_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_liveness_sessions")),
        sa.UniqueConstraint("biz_ref", name=op.f("uq_liveness_sessions_biz_ref")),
        sa.UniqueConstraint("vendor", "vendor_session_id", name=op.f("uq_liveness_sessions_vendor")),
    )
    op.create_index(op.f("ix_liveness_sessions_login_id"), "liveness_sessions", ["login_id"])
    op.create_index(op.f("ix_liveness_sessions_expires_at"), "liveness_sessions", ["expires_at"])
    with op.batch_alter_table("cardholders") as batch:
        batch.add_column(sa.Column("photo_ref", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cardholders") as batch:
        batch.drop_column("photo_ref")
    op.drop_index(op.f("ix_liveness_sessions_expires_at"), table_name="liveness_sessions")
    op.drop_index(op.f("ix_liveness_sessions_login_id"), table_name="liveness_sessions")
    op.drop_table("liveness_sessions")
