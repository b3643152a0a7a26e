"""Payments: scheduled channel queries and closing unpaid orders (helper: recovery)

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # PLACEHOLDER: filled in by its owner


def downgrade() -> None:
    pass
