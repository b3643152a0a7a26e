"""Payments: the callbacks inbox (one row per verified channel event, unique per channel and event id)

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "payment_callbacks",
        sa.Column("id", ID, nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("order_ref", sa.String(length=64), nullable=False),
        sa.Column("channel_trade_no", sa.String(length=64), nullable=False),
        sa.Column("channel_state", sa.String(length=32), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=24), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_callbacks")),
        # Deduplicates deliveries of one event, concurrent ones included (payments/callbacks/inbox.py).
        sa.UniqueConstraint("channel", "event_id", name=op.f("uq_payment_callbacks_channel")),
    )
    op.create_index(op.f("ix_payment_callbacks_order_ref"), "payment_callbacks", ["order_ref"])
    op.create_index(op.f("ix_payment_callbacks_outcome"), "payment_callbacks", ["outcome"])


def downgrade() -> None:
    op.drop_index(op.f("ix_payment_callbacks_outcome"), table_name="payment_callbacks")
    op.drop_index(op.f("ix_payment_callbacks_order_ref"), table_name="payment_callbacks")
    op.drop_table("payment_callbacks")
