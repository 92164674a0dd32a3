"""The state of the messaging policy: conversations between professionals and patients.

Stored messages are encrypted to their owners' keys, so the policy (``directory.policy``) cannot
look back at them: it keeps its own table, one row per (patient, professional), written when a
professional's message to a patient is accepted — by submission, or from another operator on
the inbound port — and read when a patient writes.

:class:`MessagingPolicy` is what senders use (the SMTP handlers now, the webmail later):
``refusal`` for each recipient, then ``plan`` the message; the planned updates travel with the
accepted message (``AcceptedMessage.conversations``) and :func:`record` writes them in the
message's own delivery transaction (``mailserver.delivery``): a message is stored and its
conversation opened (or closed) together, or neither. (They used to be written in transactions
of their own around the delivery, which left a crash window in which a delivered message had
not opened the conversation it should have, so that the patient could not answer it.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import String, UniqueConstraint, bindparam, case, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from directory.policy import (
    ConversationState,
    ConversationUpdate,
    KindOf,
    Refusal,
    check_recipient,
    closes_conversation,
    conversation_updates,
    needs_conversations,
    normalize_address,
)
from mailserver.message.headers import MessageFormatError, header_addresses, select_fields
from openmss.db.base import Base, BigId, UTCDateTime, table
from openmss.db.engine import Database


class Conversation(Base):
    """A professional's conversation with a patient (addresses lower-cased)."""

    __tablename__ = "conversations"
    # The unique constraint's index also serves the lookups by patient (its first column).
    __table_args__ = (UniqueConstraint("patient", "professional"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    patient: Mapped[str] = mapped_column(String(320))
    professional: Mapped[str] = mapped_column(String(320))
    # Where the patient may answer besides the professional: the Reply-To of the latest message.
    reply_to: Mapped[str | None] = mapped_column(String(320), nullable=True)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_message_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


def record(session: Session, updates: Sequence[ConversationUpdate], now: datetime) -> None:
    """Upsert one row per update, in the caller's transaction.

    A message opens the conversation, or reopens a closed one (a new conversation: ``opened_at``
    and ``reply_to`` start again); a closing message also sets ``closed_at``. Within an open
    conversation, a message with a ``Reply-To`` replaces the address kept, one without keeps it
    (the patient may still be answering the earlier message).
    """
    if not updates:
        return
    conversations = table(Conversation)
    was_closed = conversations.c.closed_at.is_not(None)
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else pg_insert
    for update in updates:
        statement = insert(conversations).values(
            patient=update.patient,
            professional=update.professional,
            reply_to=update.reply_to,
            opened_at=now,
            last_message_at=now,
            closed_at=now if update.closes else None,
        )
        excluded = statement.excluded
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["patient", "professional"],
                set_={
                    "reply_to": case(
                        (was_closed, excluded.reply_to),
                        else_=func.coalesce(excluded.reply_to, conversations.c.reply_to),
                    ),
                    "last_message_at": excluded.last_message_at,
                    "closed_at": excluded.closed_at,
                    "opened_at": case((was_closed, excluded.opened_at), else_=conversations.c.opened_at),
                },
            )
        )


class MessagingPolicy:
    """The policy applied by everything that sends: decisions from ``directory.policy``, state
    from the ``conversations`` table."""

    def __init__(self, db: Database, kind_of: KindOf) -> None:
        self.db = db
        self.kind_of = kind_of
        c = table(Conversation).c
        self._by_patient = select(c.professional, c.reply_to, c.closed_at).where(
            c.patient == bindparam("patient")
        )

    async def conversations_of(self, patient: str) -> list[ConversationState]:
        async with self.db.reads() as reads:
            rows = await reads.rows(self._by_patient, {"patient": normalize_address(patient)})
        return [ConversationState(row[0], row[1], row[2] is not None) for row in rows]

    async def refusal(self, sender: str, recipient: str) -> Refusal | None:
        """Why *sender* may not write to *recipient* (None: allowed). Reads the state only for
        a patient writing to a professional."""
        conversations: list[ConversationState] = []
        if needs_conversations(sender, recipient, self.kind_of):
            conversations = await self.conversations_of(sender)
        return check_recipient(sender, recipient, self.kind_of, conversations)

    def plan(self, sender: str, recipients: Iterable[str], content: bytes) -> list[ConversationUpdate]:
        """The conversations a message will open or close once accepted (none unless a
        professional writes to patients). Reads only ``X-MSS-MES``, ``Subject``, ``Reply-To``."""
        recipients = list(recipients)
        if not conversation_updates(sender, recipients, self.kind_of, closes=False):
            return []
        try:
            headers = select_fields(content, ("X-MSS-MES", "Subject", "Reply-To"))
        except MessageFormatError:
            return []  # refused by the content checks before this is called
        closes = closes_conversation(headers.get_all("X-MSS-MES") or [], headers.get("Subject"))
        reply_to = header_addresses(headers, "Reply-To")
        return conversation_updates(sender, recipients, self.kind_of, closes=closes, reply_to=reply_to)
