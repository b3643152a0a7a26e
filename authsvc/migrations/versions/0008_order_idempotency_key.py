"""Payments: the Idempotency-Key digest (unique) and request body digest on orders

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: existing orders and orders created without a key have none. Several NULLs never collide in a
    # unique index, on PostgreSQL and SQLite alike.
    op.add_column("payment_orders", sa.Column("idempotency_key", sa.String(length=64), nullable=True))
    op.add_column("payment_orders", sa.Column("idempotency_body", sa.String(length=64), nullable=True))
    # A unique index rather than a constraint: SQLite cannot add a constraint to an existing table in place.
    op.create_index(op.f("ix_payment_orders_idempotency_key"), "payment_orders", ["idempotency_key"], unique=True)


def downgrade() -> None:
    op.drop_index(op.f("ix_payment_orders_idempotency_key"), table_name="payment_orders")
    with op.batch_alter_table("payment_orders") as batch:  # SQLite drops columns only by rebuilding the table
        batch.drop_column("idempotency_body")
        batch.drop_column("idempotency_key")
