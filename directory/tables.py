"""Tables of the professional directory: who can be written to, and how to find them.

Filled from the national file "Extraction Correspondance MSSanté" (``directory.importer``), and
by this server for its own users. Three linked entries, as the national directory has them:

* a professional (``Professional``): national id (``8`` + RPPS, ``0`` + ADELI...), names,
  profession (TRE_G15) and specialty (TRE_R38);
* an organisation (``Organisation``): FINESS, SIRET..., name and postal address;
* a mailbox (``DirectoryMailbox``): the address, its type (PER, ORG, APP, CAB), the
  professional and/or organisation it belongs to, and, for our own users, the local account.

Patients (``Patient``) have addresses ``<INS matricule>@patient.<domain>``, never in the
national file; a minor's address is managed from a legal representative's account.

Entries imported from the national file carry an ``import_key`` (the national id, or, for an
entry the file gives no identifier, ``@`` + its mailbox address): what a re-import matches on.
Entries this server creates itself have none, and an import never removes them.

The ``*_norm`` columns hold :func:`search_key` of a name (lower case, accents removed): a
prefix search is a range scan on their index, on SQLite (``NOCASE``, so that ``LIKE 'dup%'``
uses it) as on PostgreSQL (``C`` collation, for the same reason).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from openmss.db.base import Base, BigId, UTCDateTime, utcnow

# A searchable, normalised name: see the module docstring.
SearchText: TypeEngine[str] = String(255, collation="NOCASE").with_variant(
    String(255, collation="C"), "postgresql"
)

# NFKD leaves these letters whole: spell them out so that "Lœtitia" is found with "loe".
# (casefold() already turns "ß" into "ss"; U+0131 is the dotless i.)
_SEPARATORS = re.compile(r"[\W_]+")
_SPELLED = str.maketrans({"œ": "oe", "æ": "ae", "ø": "o", "ł": "l", "đ": "d", "\u0131": "i"})


def search_key(text: str | None) -> str | None:
    """What a ``*_norm`` column holds for ``text``: lower case, without accents, and every run
    of other characters than letters and digits (hyphens, apostrophes, spaces) made one space,
    so that "Lefèvre-D'Hérouville" and "lefevre d herouville" meet. Searches must apply the
    same function to what the user typed."""
    if not text:
        return None
    decomposed = unicodedata.normalize("NFKD", text.casefold().translate(_SPELLED))
    kept = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SEPARATORS.sub(" ", kept).strip()[:255] or None


class Professional(Base):
    __tablename__ = "directory_professionals"
    # Name, then id: the order searches page in (keyset). SQLite's single-column index ends with
    # the rowid anyway; PostgreSQL's would make it read and sort every row of a common name.
    __table_args__ = (
        Index("ix_directory_professionals_family_norm_id", "family_norm", "id"),
        Index("ix_directory_professionals_given_norm_id", "given_norm", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    import_key: Mapped[str | None] = mapped_column(String(330), unique=True, default=None)
    # Prefix + identifier: "8" + RPPS (11 digits), "0" + ADELI (9), "3" + FINESS + "/" + ...
    national_id: Mapped[str | None] = mapped_column(String(80), index=True, default=None)
    id_type: Mapped[str | None] = mapped_column(String(8), default=None)  # the prefix
    identifier: Mapped[str | None] = mapped_column(String(80), default=None)  # without it
    civility: Mapped[str | None] = mapped_column(String(32), default=None)  # e.g. "DR"
    family_name: Mapped[str | None] = mapped_column(String(255), default=None)
    given_name: Mapped[str | None] = mapped_column(String(255), default=None)
    family_norm: Mapped[str | None] = mapped_column(SearchText, default=None)
    given_norm: Mapped[str | None] = mapped_column(SearchText, default=None)
    category_code: Mapped[str | None] = mapped_column(String(16), default=None)  # TRE_R09
    category_label: Mapped[str | None] = mapped_column(String(255), default=None)
    profession_code: Mapped[str | None] = mapped_column(String(16), index=True, default=None)  # TRE_G15
    profession_label: Mapped[str | None] = mapped_column(String(255), default=None)
    specialty_code: Mapped[str | None] = mapped_column(String(16), index=True, default=None)  # TRE_R38
    specialty_label: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Organisation(Base):
    __tablename__ = "directory_organisations"
    __table_args__ = (
        Index("ix_directory_organisations_name_norm_id", "name_norm", "id"),
        Index("ix_directory_organisations_town_norm_id", "town_norm", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    import_key: Mapped[str | None] = mapped_column(String(330), unique=True, default=None)
    national_id: Mapped[str | None] = mapped_column(String(80), index=True, default=None)
    id_type: Mapped[str | None] = mapped_column(String(8), default=None)  # as published
    identifier: Mapped[str | None] = mapped_column(String(80), default=None)  # FINESS, SIRET...
    name: Mapped[str | None] = mapped_column(String(255), default=None)  # raison sociale
    name_norm: Mapped[str | None] = mapped_column(SearchText, default=None)
    trade_name: Mapped[str | None] = mapped_column(String(255), default=None)  # enseigne
    # The postal address, in the lines of the French standard (AFNOR XP Z10-011).
    complement_location: Mapped[str | None] = mapped_column(String(255), default=None)  # L2
    complement_distribution: Mapped[str | None] = mapped_column(String(255), default=None)  # L3
    street_number: Mapped[str | None] = mapped_column(String(32), default=None)  # L4
    street_number_complement: Mapped[str | None] = mapped_column(String(32), default=None)
    street_type: Mapped[str | None] = mapped_column(String(64), default=None)
    street_name: Mapped[str | None] = mapped_column(String(255), default=None)
    locality: Mapped[str | None] = mapped_column(String(255), default=None)  # L5, lieu-dit
    routing_line: Mapped[str | None] = mapped_column(String(255), default=None)  # L6
    postcode: Mapped[str | None] = mapped_column(String(16), index=True, default=None)
    town: Mapped[str | None] = mapped_column(String(255), default=None)  # L6 without postcode
    town_norm: Mapped[str | None] = mapped_column(SearchText, default=None)
    department: Mapped[str | None] = mapped_column(String(64), default=None)
    country: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DirectoryMailbox(Base):
    __tablename__ = "directory_mailboxes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)  # lower-cased
    kind: Mapped[str] = mapped_column(String(3), index=True)  # PER, ORG, APP, CAB (TRE_R257)
    professional_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("directory_professionals.id"), index=True, default=None
    )
    organisation_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("directory_organisations.id"), index=True, default=None
    )
    service: Mapped[str | None] = mapped_column(String(255), default=None)  # service de rattachement
    # Liste rouge: never shown by searches. Red-listed mailboxes are not in the national file,
    # so an import never changes this flag.
    red_list: Mapped[bool] = mapped_column(Boolean, default=False)
    # "Dématérialisation": the mailbox accepts documents (None: the file does not say).
    accepts_documents: Mapped[bool | None] = mapped_column(Boolean, default=None)
    # Listed in the last national file imported (False: known here only).
    national: Mapped[bool] = mapped_column(Boolean, default=False)
    # Our own user's account, when the mailbox lives here (the accounts table is unchanged).
    account_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="SET NULL"), unique=True, default=None
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Patient(Base):
    """A patient's mailbox (``<INS matricule>@patient.<domain>``), built from a qualified INS."""

    __tablename__ = "directory_patients"
    __table_args__ = (UniqueConstraint("ins", "ins_oid"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ins: Mapped[str] = mapped_column(String(32))  # the matricule (15 characters)
    ins_oid: Mapped[str] = mapped_column(String(64))  # INS-NIR 1.2.250.1.213.1.4.8, test ...4.10
    address: Mapped[str] = mapped_column(String(320), unique=True)
    birth_name: Mapped[str] = mapped_column(String(255))  # INS traits
    given_names: Mapped[str] = mapped_column(String(255))  # every first name, space separated
    used_name: Mapped[str | None] = mapped_column(String(255), default=None)
    sex: Mapped[str | None] = mapped_column(String(1), default=None)  # M, F
    birth_date: Mapped[date] = mapped_column(Date)
    birth_place: Mapped[str | None] = mapped_column(String(5), default=None)  # INSEE code
    # The patient's own account, once activated.
    account_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="SET NULL"), unique=True, default=None
    )
    # A minor's mailbox is managed from a legal representative's account.
    representative_account_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="SET NULL"), index=True, default=None
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
