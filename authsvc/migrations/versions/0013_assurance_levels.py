"""Assurance levels: acr values name levels (low, substantial, high) instead of card methods

The policy (authsvc/tokens/assurance.py) now reaches a level by several methods (card, e-card, face), so a value
naming the card no longer says what was proven. The old values map one to one: card → low, card + PIN →
substantial, card + PIN + face → high. Registered clients, SSO sessions and grants are rewritten; `amr` is unchanged.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

RENAMED = {
    "urn:sscard:acr:card": "urn:sscard:acr:low",
    "urn:sscard:acr:card-pin": "urn:sscard:acr:substantial",
    "urn:sscard:acr:card-pin-face": "urn:sscard:acr:high",
}
_COLUMNS = (("sso_sessions", "acr"), ("oauth_grants", "acr"), ("oauth_clients", "ssn_min_acr"))


def _rename(mapping: dict[str, str]) -> None:
    conn = op.get_bind()
    for table, column in _COLUMNS:
        rows = sa.table(table, sa.column(column, sa.String))
        for old, new in mapping.items():
            conn.execute(rows.update().where(rows.c[column] == old).values({column: new}))
    clients = sa.table("oauth_clients", sa.column("id", sa.Integer), sa.column("acr_values", sa.JSON))
    for row in conn.execute(sa.select(clients.c.id, clients.c.acr_values)).all():
        values = row.acr_values if isinstance(row.acr_values, list) else json.loads(row.acr_values or "[]")
        renamed = [mapping.get(value, value) for value in values]
        if renamed != values:
            conn.execute(clients.update().where(clients.c.id == row.id).values(acr_values=renamed))


def upgrade() -> None:
    _rename(RENAMED)


def downgrade() -> None:
    _rename({new: old for old, new in RENAMED.items()})
