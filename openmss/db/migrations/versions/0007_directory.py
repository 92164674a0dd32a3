"""directory: professionals, organisations, mailboxes (national file) and patients

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import openmss.db.base

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _search_text() -> sa.types.TypeEngine[str]:
    # Lower-cased, accent-free names: NOCASE on SQLite and "C" on PostgreSQL, so that a prefix
    # LIKE (and a range) uses the plain index on both (see directory.tables).
    return sa.String(length=255, collation="NOCASE").with_variant(
        sa.String(length=255, collation="C"), "postgresql"
    )


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", openmss.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", openmss.db.base.UTCDateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "directory_professionals",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("import_key", sa.String(length=330), nullable=True),
        sa.Column("national_id", sa.String(length=80), nullable=True),
        sa.Column("id_type", sa.String(length=8), nullable=True),
        sa.Column("identifier", sa.String(length=80), nullable=True),
        sa.Column("civility", sa.String(length=32), nullable=True),
        sa.Column("family_name", sa.String(length=255), nullable=True),
        sa.Column("given_name", sa.String(length=255), nullable=True),
        sa.Column("family_norm", _search_text(), nullable=True),
        sa.Column("given_norm", _search_text(), nullable=True),
        sa.Column("category_code", sa.String(length=16), nullable=True),
        sa.Column("category_label", sa.String(length=255), nullable=True),
        sa.Column("profession_code", sa.String(length=16), nullable=True),
        sa.Column("profession_label", sa.String(length=255), nullable=True),
        sa.Column("specialty_code", sa.String(length=16), nullable=True),
        sa.Column("specialty_label", sa.String(length=255), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_professionals")),
        sa.UniqueConstraint("import_key", name=op.f("uq_directory_professionals_import_key")),
    )
    with op.batch_alter_table("directory_professionals", schema=None) as batch_op:
        for column in ("national_id", "family_norm", "given_norm", "profession_code", "specialty_code"):
            batch_op.create_index(batch_op.f(f"ix_directory_professionals_{column}"), [column], unique=False)

    op.create_table(
        "directory_organisations",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("import_key", sa.String(length=330), nullable=True),
        sa.Column("national_id", sa.String(length=80), nullable=True),
        sa.Column("id_type", sa.String(length=8), nullable=True),
        sa.Column("identifier", sa.String(length=80), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("name_norm", _search_text(), nullable=True),
        sa.Column("trade_name", sa.String(length=255), nullable=True),
        sa.Column("complement_location", sa.String(length=255), nullable=True),
        sa.Column("complement_distribution", sa.String(length=255), nullable=True),
        sa.Column("street_number", sa.String(length=32), nullable=True),
        sa.Column("street_number_complement", sa.String(length=32), nullable=True),
        sa.Column("street_type", sa.String(length=64), nullable=True),
        sa.Column("street_name", sa.String(length=255), nullable=True),
        sa.Column("locality", sa.String(length=255), nullable=True),
        sa.Column("routing_line", sa.String(length=255), nullable=True),
        sa.Column("postcode", sa.String(length=16), nullable=True),
        sa.Column("town", sa.String(length=255), nullable=True),
        sa.Column("town_norm", _search_text(), nullable=True),
        sa.Column("department", sa.String(length=64), nullable=True),
        sa.Column("country", sa.String(length=64), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_organisations")),
        sa.UniqueConstraint("import_key", name=op.f("uq_directory_organisations_import_key")),
    )
    with op.batch_alter_table("directory_organisations", schema=None) as batch_op:
        for column in ("national_id", "name_norm", "postcode", "town_norm"):
            batch_op.create_index(batch_op.f(f"ix_directory_organisations_{column}"), [column], unique=False)

    op.create_table(
        "directory_mailboxes",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=3), nullable=False),
        sa.Column("professional_id", _id(), nullable=True),
        sa.Column("organisation_id", _id(), nullable=True),
        sa.Column("service", sa.String(length=255), nullable=True),
        sa.Column("red_list", sa.Boolean(), nullable=False),
        sa.Column("accepts_documents", sa.Boolean(), nullable=True),
        sa.Column("national", sa.Boolean(), nullable=False),
        sa.Column("account_id", _id(), nullable=True),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_directory_mailboxes_account_id_accounts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["directory_organisations.id"],
            name=op.f("fk_directory_mailboxes_organisation_id_directory_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["professional_id"],
            ["directory_professionals.id"],
            name=op.f("fk_directory_mailboxes_professional_id_directory_professionals"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_mailboxes")),
        sa.UniqueConstraint("account_id", name=op.f("uq_directory_mailboxes_account_id")),
        sa.UniqueConstraint("address", name=op.f("uq_directory_mailboxes_address")),
    )
    with op.batch_alter_table("directory_mailboxes", schema=None) as batch_op:
        for column in ("kind", "professional_id", "organisation_id"):
            batch_op.create_index(batch_op.f(f"ix_directory_mailboxes_{column}"), [column], unique=False)

    op.create_table(
        "directory_patients",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("ins", sa.String(length=32), nullable=False),
        sa.Column("ins_oid", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("birth_name", sa.String(length=255), nullable=False),
        sa.Column("given_names", sa.String(length=255), nullable=False),
        sa.Column("used_name", sa.String(length=255), nullable=True),
        sa.Column("sex", sa.String(length=1), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("birth_place", sa.String(length=5), nullable=True),
        sa.Column("account_id", _id(), nullable=True),
        sa.Column("representative_account_id", _id(), nullable=True),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_directory_patients_account_id_accounts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["representative_account_id"],
            ["accounts.id"],
            name=op.f("fk_directory_patients_representative_account_id_accounts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_patients")),
        sa.UniqueConstraint("account_id", name=op.f("uq_directory_patients_account_id")),
        sa.UniqueConstraint("address", name=op.f("uq_directory_patients_address")),
        sa.UniqueConstraint("ins", "ins_oid", name=op.f("uq_directory_patients_ins")),
    )
    with op.batch_alter_table("directory_patients", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_directory_patients_representative_account_id"),
            ["representative_account_id"],
            unique=False,
        )


def downgrade() -> None:
    op.drop_table("directory_patients")
    op.drop_table("directory_mailboxes")
    op.drop_table("directory_organisations")
    op.drop_table("directory_professionals")
