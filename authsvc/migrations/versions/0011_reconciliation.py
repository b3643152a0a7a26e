"""Payments: statement reconciliation runs and items (helper: reconciliation)

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # PLACEHOLDER: filled in by its owner


def downgrade() -> None:
    pass
