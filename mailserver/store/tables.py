"""Tables of the mail store.

Laid out for IMAP from the start (RFC 3501 §2.3.1): every mailbox has a UIDVALIDITY and a
UIDNEXT; a message's UID is allocated from its mailbox's UIDNEXT in the same transaction that
stores it, so UIDs are strictly ascending and never reused. The body is an opaque blob.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from openmss.db.base import Base, BigId, UTCDateTime, utcnow


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)  # lower-cased
    password_hash: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str] = mapped_column(String(255), default="")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Mailbox(Base):
    __tablename__ = "mailboxes"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(512))
    special_use: Mapped[str | None] = mapped_column(String(32), default=None)  # RFC 6154: \Sent...
    uidvalidity: Mapped[int] = mapped_column(BigId)
    uidnext: Mapped[int] = mapped_column(BigId, default=1)
    # RFC 7162 §3.1.1: the mailbox's highest mod-sequence; every change to the mailbox (new
    # message, flags, expunge) takes the next value. Sessions catch up on changes with it.
    modseq: Mapped[int] = mapped_column(BigId, default=1)
    subscribed: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Blob(Base):
    __tablename__ = "blobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    size: Mapped[int] = mapped_column(BigId)
    chunk_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BlobChunk(Base):
    __tablename__ = "blob_chunks"

    blob_id: Mapped[int] = mapped_column(ForeignKey("blobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("mailbox_id", "uid"),
        Index("ix_messages_blob", "blob_id"),
        Index("ix_messages_modseq", "mailbox_id", "modseq"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    uid: Mapped[int] = mapped_column(BigId)
    blob_id: Mapped[int] = mapped_column(ForeignKey("blobs.id"))
    size: Mapped[int] = mapped_column(BigId)  # RFC822.SIZE
    internal_date: Mapped[datetime] = mapped_column(UTCDateTime)
    flags: Mapped[str] = mapped_column(Text, default="")  # space-separated, e.g. "\\Seen $Forwarded"
    # The server encrypted this copy to a key it holds for the owner: an unlocked session is
    # served the decrypted message, and ``size`` is the decrypted size (see docs/encryption.md).
    decrypt_on_read: Mapped[bool] = mapped_column(Boolean, default=False)
    modseq: Mapped[int] = mapped_column(BigId, default=1)  # of its last change (RFC 7162)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ExpungedMessage(Base):
    """Which UIDs left a mailbox, and at which mod-sequence: how other sessions (on any
    instance) learn of an expunge (RFC 3501 §7.4.1) and, later, QRESYNC's VANISHED."""

    __tablename__ = "expunged_messages"

    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True)
    uid: Mapped[int] = mapped_column(BigId, primary_key=True)
    modseq: Mapped[int] = mapped_column(BigId)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MessageHeader(Base):
    """The header of a message the server can read, sealed (AES-256-GCM) under a key derived
    from its owner's data key: what SEARCH FROM/SUBJECT/HEADER… reads instead of decrypting
    every message (see ``mailserver.store.headerindex``). Written by a session that has read
    the message (or appended it); never readable without the owner's password."""

    __tablename__ = "message_headers"

    message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
