"""Payments: bank withholding agreements, batches and lines; card accounts (helper: bank)

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # PLACEHOLDER: filled in by its owner


def downgrade() -> None:
    pass
