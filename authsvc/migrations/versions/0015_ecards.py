"""Electronic social security cards: device keys, sign-ins (helper: ecard)

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ecards",
        sa.Column("id", ID, nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("cardholder_id", sa.Integer(), nullable=False),
        sa.Column("card_id", sa.Integer(), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("jkt", sa.String(length=43), nullable=False),
        sa.Column("device_name", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("revoked_reason", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["cardholder_id"], ["cardholders.id"], name=op.f("fk_ecards_cardholder_id_cardholders")
        ),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name=op.f("fk_ecards_card_id_cards")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ecards")),
        sa.UniqueConstraint("public_id", name=op.f("uq_ecards_public_id")),
        sa.UniqueConstraint("jkt", name=op.f("uq_ecards_jkt")),
    )
    op.create_index(op.f("ix_ecards_cardholder_id"), "ecards", ["cardholder_id"])
    op.create_index(op.f("ix_ecards_card_id"), "ecards", ["card_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_ecards_card_id"), table_name="ecards")
    op.drop_index(op.f("ix_ecards_cardholder_id"), table_name="ecards")
    op.drop_table("ecards")
