"""Payments: bank withholding agreements, batches and lines (helper: bank)

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "withholding_agreements",
        sa.Column("id", ID, nullable=False),
        sa.Column("agreement_no", sa.String(length=40), nullable=False),
        sa.Column("payer_kind", sa.String(length=16), nullable=False),
        sa.Column("payer", sa.String(length=64), nullable=False),
        sa.Column("insured_ssn", sa.String(length=18), nullable=False),
        sa.Column("account_token", sa.String(length=64), nullable=False),
        sa.Column("account_masked", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_withholding_agreements")),
        sa.UniqueConstraint("agreement_no", name=op.f("uq_withholding_agreements_agreement_no")),
    )
    op.create_index(
        "ix_withholding_agreements_payer", "withholding_agreements", ["payer_kind", "payer", "insured_ssn"]
    )
    op.create_table(
        "withholding_batches",
        sa.Column("id", ID, nullable=False),
        sa.Column("batch_no", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("total_fen", sa.BigInteger(), nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("result_sha256", sa.String(length=64), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_withholding_batches")),
        sa.UniqueConstraint("batch_no", name=op.f("uq_withholding_batches_batch_no")),
    )
    op.create_table(
        "withholding_lines",
        sa.Column("id", ID, nullable=False),
        sa.Column("batch_id", ID, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("order_no", sa.String(length=32), nullable=False),
        sa.Column("agreement_no", sa.String(length=40), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("result_code", sa.String(length=24), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("bank_trade_no", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["withholding_batches.id"], name=op.f("fk_withholding_lines_batch_id_withholding_batches")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_withholding_lines")),
        sa.UniqueConstraint("batch_id", "seq", name=op.f("uq_withholding_lines_batch_id")),
        sa.UniqueConstraint("order_no", name=op.f("uq_withholding_lines_order_no")),
    )
    op.create_index(op.f("ix_withholding_lines_batch_id"), "withholding_lines", ["batch_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_withholding_lines_batch_id"), table_name="withholding_lines")
    op.drop_table("withholding_lines")
    op.drop_table("withholding_batches")
    op.drop_index("ix_withholding_agreements_payer", table_name="withholding_agreements")
    op.drop_table("withholding_agreements")
