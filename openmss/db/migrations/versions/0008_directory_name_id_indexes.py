"""directory: name indexes that end with the id (keyset paging order)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 18:10:00

The searches page by (name, id). A single-column index gives that order on SQLite (its indexes
end with the rowid) but not on PostgreSQL, which then read and sorted every row sharing a common
name (~10,000 "martin"): p99 137 ms on 535,000 rows against 24 ms with these.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_INDEXES = (
    ("directory_professionals", "family_norm"),
    ("directory_professionals", "given_norm"),
    ("directory_organisations", "name_norm"),
    ("directory_organisations", "town_norm"),
)


def upgrade() -> None:
    for table, column in _INDEXES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_{column}"))
            batch_op.create_index(f"ix_{table}_{column}_id", [column, "id"], unique=False)


def downgrade() -> None:
    for table, column in _INDEXES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f"ix_{table}_{column}_id")
            batch_op.create_index(batch_op.f(f"ix_{table}_{column}"), [column], unique=False)
