"""Operations on the outbound queue, each inside a caller's transaction."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from mailserver.queue.tables import QueuedMessage, QueuedRecipient
from mailserver.store.blobs import BlobStore
from mailserver.store.tables import Message
from openmss.db.base import random_id, table, utcnow

QUEUED, DELIVERED, FAILED = "queued", "delivered", "failed"


@dataclass(frozen=True)
class RecipientSpec:
    """A recipient with its RFC 3461 parameters."""

    address: str
    notify: str | None = None  # e.g. "FAILURE,DELAY" or "NEVER"
    orcpt: str | None = None


@dataclass(frozen=True)
class NewQueued:
    """A message to queue for remote recipients; its body is an already stored blob."""

    queue_id: str
    mail_from: str
    recipients: Sequence[RecipientSpec]
    blob_id: int
    size: int
    envid: str | None = None
    ret: str | None = None


@dataclass(frozen=True)
class QueueEntry:
    recipient_id: int
    message_id: int
    queue_id: str
    mail_from: str
    recipient: str
    domain: str
    attempts: int
    next_attempt_at: datetime
    state: str
    last_error: str | None
    expires_at: datetime


def new_queue_id() -> str:
    return secrets.token_hex(8).upper()


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


def _entries_query(*conditions: Any) -> Select[QueuedRecipient, QueuedMessage]:
    return (
        select(QueuedRecipient, QueuedMessage)
        .join(QueuedMessage, QueuedMessage.id == QueuedRecipient.message_id)
        .where(*conditions)
        .order_by(QueuedRecipient.id)
    )


def _entry(r: QueuedRecipient, m: QueuedMessage) -> QueueEntry:
    return QueueEntry(
        recipient_id=r.id,
        message_id=m.id,
        queue_id=m.queue_id,
        mail_from=m.mail_from,
        recipient=r.recipient,
        domain=r.domain,
        attempts=r.attempts,
        next_attempt_at=r.next_attempt_at,
        state=r.state,
        last_error=r.last_error,
        expires_at=m.expires_at,
    )


class QueueStore:
    """Writes are synchronous (the writer thread, or the CLI); reads are async (the event loop)."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def enqueue_many(self, session: Session, items: Sequence[NewQueued], *, lifetime: timedelta) -> None:
        """Queue messages whose bodies are already stored (two statements whatever the count)."""
        if not items:
            return
        now = utcnow()
        conn = session.connection()
        ids = [random_id() for _ in items]
        conn.execute(
            insert(table(QueuedMessage)),
            [
                {
                    "id": message_id,
                    "queue_id": item.queue_id,
                    "mail_from": item.mail_from,
                    "blob_id": item.blob_id,
                    "size": item.size,
                    "envid": item.envid,
                    "ret": item.ret,
                    "created_at": now,
                    "expires_at": now + lifetime,
                }
                for message_id, item in zip(ids, items, strict=True)
            ],
        )
        rows = [
            {
                "message_id": message_id,
                "recipient": r.address,
                "domain": domain_of(r.address),
                "notify": r.notify,
                "orcpt": r.orcpt,
                "next_attempt_at": now,
                "updated_at": now,
            }
            for message_id, item in zip(ids, items, strict=True)
            for r in item.recipients
        ]
        conn.execute(insert(table(QueuedRecipient)), rows)

    def claim_due(
        self, session: Session, *, worker: str, lease: timedelta, limit: int = 100
    ) -> list[QueueEntry]:
        """Lease due recipients to ``worker`` so that two instances never send the same one."""
        now = utcnow()
        query = (
            select(QueuedRecipient.id)
            .where(
                QueuedRecipient.state == QUEUED,
                QueuedRecipient.next_attempt_at <= now,
                or_(QueuedRecipient.locked_until.is_(None), QueuedRecipient.locked_until < now),
            )
            .order_by(QueuedRecipient.next_attempt_at)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list(session.scalars(query))
        if not ids:
            return []
        session.execute(
            update(QueuedRecipient)
            .where(QueuedRecipient.id.in_(ids))
            .values(locked_until=now + lease, locked_by=worker)
        )
        rows = session.execute(_entries_query(QueuedRecipient.id.in_(ids)))
        return [_entry(r, m) for r, m in rows]

    async def entries(self, session: AsyncSession, *conditions: Any) -> list[QueueEntry]:
        rows = await session.execute(_entries_query(*conditions))
        return [_entry(r, m) for r, m in rows]

    def recipient_sync(self, session: Session, recipient_id: int) -> QueuedRecipient:
        rcpt = session.get(QueuedRecipient, recipient_id)
        if rcpt is None:
            raise LookupError(recipient_id)
        return rcpt

    async def message(self, session: AsyncSession, message_id: int) -> QueuedMessage:
        msg = await session.get(QueuedMessage, message_id)
        if msg is None:
            raise LookupError(message_id)
        return msg

    async def recipient(self, session: AsyncSession, recipient_id: int) -> QueuedRecipient:
        rcpt = await session.get(QueuedRecipient, recipient_id)
        if rcpt is None:
            raise LookupError(recipient_id)
        return rcpt

    def mark(
        self,
        session: Session,
        recipient_id: int,
        *,
        state: str,
        error: str | None = None,
        next_attempt_at: datetime | None = None,
    ) -> None:
        values: dict[str, object] = {
            "state": state,
            "attempts": QueuedRecipient.attempts + 1,
            "last_error": error,
            "locked_until": None,
            "locked_by": None,
            "updated_at": utcnow(),
        }
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        session.execute(update(QueuedRecipient).where(QueuedRecipient.id == recipient_id).values(**values))

    def finish_if_done(self, session: Session, message_id: int) -> bool:
        """Delete the message and its body once no recipient is waiting any more."""
        waiting = session.scalar(
            select(func.count())
            .select_from(QueuedRecipient)
            .where(QueuedRecipient.message_id == message_id, QueuedRecipient.state == QUEUED)
        )
        if waiting:
            return False
        msg = session.get(QueuedMessage, message_id)
        if msg is None:
            return True
        blob_id = msg.blob_id
        session.execute(delete(QueuedRecipient).where(QueuedRecipient.message_id == message_id))
        session.execute(delete(QueuedMessage).where(QueuedMessage.id == message_id))
        # The body may be shared with the copies filed in local mailboxes (the Sent copy...).
        shared = session.scalar(select(func.count()).select_from(Message).where(Message.blob_id == blob_id))
        if not shared:
            self.blobs.delete(session, blob_id)
        return True

    async def count_waiting(self, session: AsyncSession) -> int:
        n = await session.scalar(
            select(func.count()).select_from(QueuedRecipient).where(QueuedRecipient.state == QUEUED)
        )
        return int(n or 0)

    async def list(self, session: AsyncSession) -> list[QueueEntry]:
        return await self.entries(session, QueuedRecipient.state == QUEUED)

    def retry_now(self, session: Session, queue_id: str | None = None) -> int:
        """Make waiting recipients due now (all, or one message's)."""
        query = update(QueuedRecipient).where(QueuedRecipient.state == QUEUED)
        if queue_id is not None:
            ids = select(QueuedMessage.id).where(QueuedMessage.queue_id == queue_id).scalar_subquery()
            query = query.where(QueuedRecipient.message_id == ids)
        result = session.execute(query.values(next_attempt_at=utcnow(), locked_until=None))
        return int(getattr(result, "rowcount", 0) or 0)
