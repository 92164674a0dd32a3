"""Tables of the key directory: OpenPGP keys of people who have no account here.

The keys of our own accounts live in the keyring (``openmss.keyring.tables.AccountKey``); this
table holds the public keys the operator imported for professionals of other operators of the
trust space, so that mail to them can be encrypted and their signatures checked. One row per
(address, certificate): a certificate with two e-mail user IDs gives two rows.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from openmss.db.base import Base, BigId, UTCDateTime, utcnow


class PublicKey(Base):
    __tablename__ = "public_keys"
    # The unique constraint's index also serves the lookups by address (its first column).
    __table_args__ = (UniqueConstraint("address", "fingerprint"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(320))  # lower-cased
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)  # upper-case hex, primary key
    public: Mapped[bytes] = mapped_column(LargeBinary)  # binary transferable public key
    source: Mapped[str] = mapped_column(String(32), default="import")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
