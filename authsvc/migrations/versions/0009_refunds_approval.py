"""Payments: refunds requested by operators (who, why, the second operator's decision, the channel's answer, the
Idempotency-Key digests) and refund notifications in the callbacks inbox (refund_ref)

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_REFUND_COLUMNS = [
    # Nullable: refunds recorded before operators asked for them over the API have none of these.
    sa.Column("reason", sa.String(length=200), nullable=True),
    sa.Column("requested_client", sa.String(length=64), nullable=True),
    sa.Column("requested_subject", sa.String(length=64), nullable=True),
    sa.Column("approval_required", sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column("decision", sa.String(length=16), nullable=True),
    sa.Column("decided_client", sa.String(length=64), nullable=True),
    sa.Column("decided_subject", sa.String(length=64), nullable=True),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("decision_note", sa.String(length=200), nullable=True),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("channel_refund_no", sa.String(length=64), nullable=True),
    sa.Column("channel_note", sa.String(length=200), nullable=True),
    sa.Column("idempotency_key", sa.String(length=64), nullable=True),
    sa.Column("idempotency_body", sa.String(length=64), nullable=True),
]


def upgrade() -> None:
    # SQLite changes a column's type only by rebuilding the table: batch mode does that there, ALTER elsewhere.
    with op.batch_alter_table("payment_refunds") as batch:
        batch.alter_column("state", existing_type=sa.String(length=16), type_=sa.String(length=20))
        for column in _REFUND_COLUMNS:
            batch.add_column(column)
    op.create_index(op.f("ix_payment_refunds_state"), "payment_refunds", ["state"])
    # A unique index rather than a constraint (as on orders, 0008): several NULLs never collide.
    op.create_index(op.f("ix_payment_refunds_idempotency_key"), "payment_refunds", ["idempotency_key"], unique=True)
    op.add_column("payment_callbacks", sa.Column("refund_ref", sa.String(length=64), nullable=True))
    op.create_index(op.f("ix_payment_callbacks_refund_ref"), "payment_callbacks", ["refund_ref"])


def downgrade() -> None:
    op.drop_index(op.f("ix_payment_callbacks_refund_ref"), table_name="payment_callbacks")
    with op.batch_alter_table("payment_callbacks") as batch:
        batch.drop_column("refund_ref")
    op.drop_index(op.f("ix_payment_refunds_idempotency_key"), table_name="payment_refunds")
    op.drop_index(op.f("ix_payment_refunds_state"), table_name="payment_refunds")
    with op.batch_alter_table("payment_refunds") as batch:
        for column in reversed(_REFUND_COLUMNS):
            batch.drop_column(column.name)
        batch.alter_column("state", existing_type=sa.String(length=20), type_=sa.String(length=16))
