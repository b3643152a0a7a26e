"""Payments: statement reconciliation runs and items (helper: reconciliation)

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "recon_runs",
        sa.Column("id", ID, nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("lines", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("totals", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recon_runs")),
        # The same statement file for the same day is one run (payments/reconciliation/service.py).
        sa.UniqueConstraint("channel", "day", "digest", name=op.f("uq_recon_runs_channel")),
    )
    op.create_index(op.f("ix_recon_runs_day"), "recon_runs", ["day"])
    op.create_table(
        "recon_items",
        sa.Column("id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("line_no", sa.BigInteger(), nullable=True),
        sa.Column("occurrence", sa.Integer(), nullable=False),
        sa.Column("order_no", sa.String(length=64), nullable=True),
        sa.Column("channel_trade_no", sa.String(length=64), nullable=True),
        sa.Column("refund_no", sa.String(length=64), nullable=True),
        sa.Column("channel_refund_no", sa.String(length=64), nullable=True),
        sa.Column("statement_fen", sa.BigInteger(), nullable=True),
        sa.Column("ours_fen", sa.BigInteger(), nullable=True),
        sa.Column("resolution", sa.String(length=20), nullable=False),
        sa.Column("ledger_key", sa.String(length=128), nullable=True),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["recon_runs.id"], name=op.f("fk_recon_items_run_id_recon_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recon_items")),
    )
    op.create_index(op.f("ix_recon_items_run_id"), "recon_items", ["run_id"])
    op.create_index(op.f("ix_recon_items_order_no"), "recon_items", ["order_no"])
    op.create_index(op.f("ix_recon_items_resolution"), "recon_items", ["resolution"])


def downgrade() -> None:
    op.drop_index(op.f("ix_recon_items_resolution"), table_name="recon_items")
    op.drop_index(op.f("ix_recon_items_order_no"), table_name="recon_items")
    op.drop_index(op.f("ix_recon_items_run_id"), table_name="recon_items")
    op.drop_table("recon_items")
    op.drop_index(op.f("ix_recon_runs_day"), table_name="recon_runs")
    op.drop_table("recon_runs")
