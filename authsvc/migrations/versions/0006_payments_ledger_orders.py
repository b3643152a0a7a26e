"""Payments: the double-entry ledger (append-only on PostgreSQL), contribution orders and refunds

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Ledger rows are never changed or removed, whatever the application does: a correction is a new, reversing entry.
# (TRUNCATE, a table owner's operation, is not a row change and stays possible for test databases.)
IMMUTABLE = """
CREATE FUNCTION ledger_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger rows are immutable: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("id", ID, nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("normal_side", sa.String(length=6), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_accounts")),
        sa.UniqueConstraint("code", name=op.f("uq_ledger_accounts_code")),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", ID, nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("order_ref", sa.String(length=64), nullable=True),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
        sa.UniqueConstraint("key", name=op.f("uq_ledger_entries_key")),
    )
    op.create_index(op.f("ix_ledger_entries_order_ref"), "ledger_entries", ["order_ref"])
    op.create_table(
        "ledger_postings",
        sa.Column("id", ID, nullable=False),
        sa.Column("entry_id", ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("side", sa.String(length=6), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_postings_amount_positive")),
        sa.CheckConstraint("side IN ('debit', 'credit')", name=op.f("ck_ledger_postings_side_known")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["ledger_accounts.id"], name=op.f("fk_ledger_postings_account_id_ledger_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["ledger_entries.id"], name=op.f("fk_ledger_postings_entry_id_ledger_entries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_postings")),
    )
    op.create_index(op.f("ix_ledger_postings_account_id"), "ledger_postings", ["account_id"])
    op.create_index(op.f("ix_ledger_postings_entry_id"), "ledger_postings", ["entry_id"])
    op.create_table(
        "payment_orders",
        sa.Column("id", ID, nullable=False),
        sa.Column("order_no", sa.String(length=32), nullable=False),
        sa.Column("payer_kind", sa.String(length=16), nullable=False),
        sa.Column("payer", sa.String(length=64), nullable=False),
        sa.Column("insured_ssn", sa.String(length=18), nullable=False),
        sa.Column("insurance_type", sa.String(length=16), nullable=False),
        sa.Column("periods", sa.JSON(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("region", sa.String(length=6), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("refund_reserved_fen", sa.BigInteger(), nullable=False),
        sa.Column("refunded_fen", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_payment_orders_amount_positive")),
        sa.CheckConstraint(
            "refund_reserved_fen >= refunded_fen AND refund_reserved_fen <= amount_fen",
            name=op.f("ck_payment_orders_refunds"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_orders")),
        sa.UniqueConstraint("order_no", name=op.f("uq_payment_orders_order_no")),
    )
    op.create_index(op.f("ix_payment_orders_payer"), "payment_orders", ["payer"])
    op.create_index(op.f("ix_payment_orders_insured_ssn"), "payment_orders", ["insured_ssn"])
    op.create_index(op.f("ix_payment_orders_state"), "payment_orders", ["state"])
    op.create_table(
        "payment_refunds",
        sa.Column("id", ID, nullable=False),
        sa.Column("refund_no", sa.String(length=40), nullable=False),
        sa.Column("order_id", ID, nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_payment_refunds_amount_positive")),
        sa.ForeignKeyConstraint(
            ["order_id"], ["payment_orders.id"], name=op.f("fk_payment_refunds_order_id_payment_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_refunds")),
        sa.UniqueConstraint("refund_no", name=op.f("uq_payment_refunds_refund_no")),
    )
    op.create_index(op.f("ix_payment_refunds_order_id"), "payment_refunds", ["order_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(IMMUTABLE)
        for table in ("ledger_entries", "ledger_postings"):
            op.execute(
                f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION ledger_immutable()"
            )


def downgrade() -> None:
    op.drop_table("payment_refunds")
    op.drop_table("payment_orders")
    op.drop_table("ledger_postings")
    op.drop_table("ledger_entries")
    op.drop_table("ledger_accounts")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS ledger_immutable()")
