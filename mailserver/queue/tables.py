"""Tables of the outbound queue.

One ``queued_messages`` row per accepted message that has remote recipients, one
``queued_recipients`` row per remote recipient (RFC 3461 parameters kept per recipient). The
body is a blob of the mail store, deleted once every recipient is delivered or bounced.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from openmss.db.base import Base, BigId, UTCDateTime, utcnow


class QueuedMessage(Base):
    __tablename__ = "queued_messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    queue_id: Mapped[str] = mapped_column(String(32), unique=True)  # shown in logs and Received:
    mail_from: Mapped[str] = mapped_column(String(320))  # "" is the null reverse-path
    blob_id: Mapped[int] = mapped_column(ForeignKey("blobs.id"))
    size: Mapped[int] = mapped_column(BigId)
    envid: Mapped[str | None] = mapped_column(String(100), default=None)  # RFC 3461 §4.4
    ret: Mapped[str | None] = mapped_column(String(4), default=None)  # RFC 3461 §4.3: FULL | HDRS
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class QueuedRecipient(Base):
    __tablename__ = "queued_recipients"
    __table_args__ = (Index("ix_queued_recipients_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("queued_messages.id", ondelete="CASCADE"), index=True)
    recipient: Mapped[str] = mapped_column(String(320))
    domain: Mapped[str] = mapped_column(String(255))
    orcpt: Mapped[str | None] = mapped_column(String(500), default=None)  # RFC 3461 §4.2
    notify: Mapped[str | None] = mapped_column(String(40), default=None)  # RFC 3461 §4.1
    state: Mapped[str] = mapped_column(String(16), default="queued")  # queued | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    locked_by: Mapped[str | None] = mapped_column(String(64), default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
