"""The audit trail: who did what to which mailbox, account or document, and when.

Rows are only ever inserted. Details are structured (JSON) and must never carry a message
body, a password or a secret: callers pass identifiers, not content.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, Text, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, Session, mapped_column

from openmss.db.base import Base, BigId, UTCDateTime, utcnow


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_target", "target", "at"), Index("ix_audit_actor", "actor", "at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(320))  # an address, "system", or "anonymous"
    action: Mapped[str] = mapped_column(String(64))  # e.g. "smtp.auth.failure", "mailbox.read"
    target: Mapped[str] = mapped_column(String(512), default="")
    peer: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(Text, default="{}")


def record(
    session: Session | AsyncSession,
    *,
    actor: str,
    action: str,
    target: str = "",
    peer: str = "",
    **detail: Any,
) -> None:
    """Add an audit event to the caller's transaction (the writer thread's or an async one)."""
    session.add(
        AuditEvent(
            actor=actor[:320],
            action=action,
            target=target[:512],
            peer=peer[:64],
            detail=json.dumps(detail, default=str, sort_keys=True),
        )
    )


async def events_for(
    session: AsyncSession, *, actor: str | None = None, target: str | None = None
) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id)
    if actor is not None:
        query = query.where(AuditEvent.actor == actor)
    if target is not None:
        query = query.where(AuditEvent.target == target)
    return list(await session.scalars(query))
