"""Payments: the recovery sweep's query schedule on orders (next_check_at, check_attempts; helper: recovery)

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("payment_orders", sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("payment_orders", sa.Column("check_attempts", sa.Integer(), server_default="0", nullable=False))
    # Orders already waiting when this runs are due at once: no callback may ever come for some of them.
    op.execute("UPDATE payment_orders SET next_check_at = created_at WHERE state IN ('created', 'pending')")
    op.create_index("ix_payment_orders_due", "payment_orders", ["state", "next_check_at"])


def downgrade() -> None:
    op.drop_index("ix_payment_orders_due", table_name="payment_orders")
    with op.batch_alter_table("payment_orders") as batch:  # SQLite drops columns only by rebuilding the table
        batch.drop_column("check_attempts")
        batch.drop_column("next_check_at")
