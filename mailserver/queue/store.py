"""Operations on the outbound queue, each inside a caller's transaction."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailserver.queue.tables import QueuedMessage, QueuedRecipient
from mailserver.store.blobs import BlobStore
from openmss.db.base import utcnow

QUEUED, DELIVERED, FAILED = "queued", "delivered", "failed"


@dataclass(frozen=True)
class RecipientSpec:
    """A recipient with its RFC 3461 parameters."""

    address: str
    notify: str | None = None  # e.g. "FAILURE,DELAY" or "NEVER"
    orcpt: str | None = None


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


class QueueStore:
    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    async def enqueue(
        self,
        session: AsyncSession,
        *,
        mail_from: str,
        recipients: Sequence[RecipientSpec],
        chunks: Iterable[bytes | memoryview],
        size: int,
        lifetime: timedelta,
        queue_id: str | None = None,
        envid: str | None = None,
        ret: str | None = None,
    ) -> str:
        blob_id = await self.blobs.put(session, chunks)
        now = utcnow()
        message = QueuedMessage(
            queue_id=queue_id or new_queue_id(),
            mail_from=mail_from,
            blob_id=blob_id,
            size=size,
            envid=envid,
            ret=ret,
            created_at=now,
            expires_at=now + lifetime,
        )
        session.add(message)
        await session.flush()
        for r in recipients:
            session.add(
                QueuedRecipient(
                    message_id=message.id,
                    recipient=r.address,
                    domain=domain_of(r.address),
                    notify=r.notify,
                    orcpt=r.orcpt,
                    next_attempt_at=now,
                    updated_at=now,
                )
            )
        await session.flush()
        return message.queue_id

    async def claim_due(
        self, session: AsyncSession, *, worker: str, lease: timedelta, limit: int = 100
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
        ids = list(await session.scalars(query))
        if not ids:
            return []
        await session.execute(
            update(QueuedRecipient)
            .where(QueuedRecipient.id.in_(ids))
            .values(locked_until=now + lease, locked_by=worker)
        )
        return await self.entries(session, QueuedRecipient.id.in_(ids))

    async def entries(self, session: AsyncSession, *conditions: object) -> list[QueueEntry]:
        rows = await session.execute(
            select(QueuedRecipient, QueuedMessage)
            .join(QueuedMessage, QueuedMessage.id == QueuedRecipient.message_id)
            .where(*conditions)  # type: ignore[arg-type]
            .order_by(QueuedRecipient.id)
        )
        return [
            QueueEntry(
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
            for r, m in rows
        ]

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

    async def mark(
        self,
        session: AsyncSession,
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
        await session.execute(
            update(QueuedRecipient).where(QueuedRecipient.id == recipient_id).values(**values)
        )

    async def finish_if_done(self, session: AsyncSession, message_id: int) -> bool:
        """Delete the message and its body once no recipient is waiting any more."""
        waiting = await session.scalar(
            select(func.count())
            .select_from(QueuedRecipient)
            .where(QueuedRecipient.message_id == message_id, QueuedRecipient.state == QUEUED)
        )
        if waiting:
            return False
        msg = await session.get(QueuedMessage, message_id)
        if msg is None:
            return True
        blob_id = msg.blob_id
        await session.execute(delete(QueuedRecipient).where(QueuedRecipient.message_id == message_id))
        await session.execute(delete(QueuedMessage).where(QueuedMessage.id == message_id))
        await self.blobs.delete(session, blob_id)
        return True

    async def count_waiting(self, session: AsyncSession) -> int:
        n = await session.scalar(
            select(func.count()).select_from(QueuedRecipient).where(QueuedRecipient.state == QUEUED)
        )
        return int(n or 0)

    async def list(self, session: AsyncSession) -> list[QueueEntry]:
        return await self.entries(session, QueuedRecipient.state == QUEUED)

    async def retry_now(self, session: AsyncSession, queue_id: str | None = None) -> int:
        """Make waiting recipients due now (all, or one message's)."""
        query = update(QueuedRecipient).where(QueuedRecipient.state == QUEUED)
        if queue_id is not None:
            ids = select(QueuedMessage.id).where(QueuedMessage.queue_id == queue_id).scalar_subquery()
            query = query.where(QueuedRecipient.message_id == ids)
        result = await session.execute(query.values(next_attempt_at=utcnow(), locked_until=None))
        return int(getattr(result, "rowcount", 0) or 0)
