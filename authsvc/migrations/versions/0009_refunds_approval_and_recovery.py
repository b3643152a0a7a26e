"""Payments: refunds with second-operator approval; order expiry and channel query schedule (helper: refunds)

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # PLACEHOLDER: filled in by its owner


def downgrade() -> None:
    pass
