"""messaging policy: conversations between professionals and patients

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import openmss.db.base

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("patient", sa.String(length=320), nullable=False),
        sa.Column("professional", sa.String(length=320), nullable=False),
        sa.Column("reply_to", sa.String(length=320), nullable=True),
        sa.Column("opened_at", openmss.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_message_at", openmss.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("closed_at", openmss.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
        # Its index also serves the lookups by patient (its first column).
        sa.UniqueConstraint("patient", "professional", name=op.f("uq_conversations_patient")),
    )


def downgrade() -> None:
    op.drop_table("conversations")
