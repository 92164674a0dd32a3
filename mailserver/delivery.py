"""Routing and delivery of an accepted message: local mailboxes, the Sent copy, the queue.

Everything happens in the caller's transaction, so a message is either stored for every local
recipient and queued for every remote one, or for none.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from directory.trust import TrustListSource
from mailserver.queue.store import QueueStore, RecipientSpec, domain_of
from mailserver.store.mailstore import MailStore, StoredMessage
from openmss.db.engine import Database


class Route(enum.Enum):
    LOCAL = "local"  # a mailbox of ours
    UNKNOWN_LOCAL = "unknown-local"  # our domain, no such mailbox
    REMOTE = "remote"  # a trusted operator's domain: goes through the queue
    UNTRUSTED = "untrusted"  # outside the trust space: never relayed


class DeliveryError(Exception):
    """A recipient can no longer be delivered (e.g. its account was removed meanwhile)."""


@dataclass
class AcceptedMessage:
    """A message as accepted by an SMTP session (or produced by the server, like a DSN)."""

    mail_from: str
    recipients: Sequence[RecipientSpec]
    chunks: Sequence[bytes | memoryview]
    size: int
    queue_id: str
    received_at: datetime
    envid: str | None = None
    ret: str | None = None
    # The authenticated local account that submitted it: gets a copy in its Sent mailbox.
    sender_account_id: int | None = None


@dataclass
class DeliveryReport:
    stored: list[tuple[str, StoredMessage]] = field(default_factory=list)  # (address, message)
    sent_copy: StoredMessage | None = None
    queued: list[str] = field(default_factory=list)


class Delivery:
    def __init__(
        self,
        *,
        local_domains: Sequence[str],
        db: Database,
        store: MailStore,
        queue: QueueStore,
        trust: TrustListSource,
        queue_lifetime: timedelta,
    ) -> None:
        self._db = db
        self._domains = frozenset(d.lower() for d in local_domains)
        self.store = store
        self.queue = queue
        self._trust = trust
        self._lifetime = queue_lifetime

    def store_session(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A read session for routing look-ups."""
        return self._db.read()

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower().rstrip(".") in self._domains

    async def route(self, session: AsyncSession, address: str) -> Route:
        domain = domain_of(address)
        if self.is_local_domain(domain):
            account = await self.store.account_by_address(session, address)
            return Route.LOCAL if account is not None and not account.disabled else Route.UNKNOWN_LOCAL
        if self._trust.current().is_trusted_domain(domain):
            return Route.REMOTE
        return Route.UNTRUSTED

    async def deliver(self, session: AsyncSession, message: AcceptedMessage) -> DeliveryReport:
        report = DeliveryReport()
        local = [r for r in message.recipients if self.is_local_domain(domain_of(r.address))]
        remote = [r for r in message.recipients if not self.is_local_domain(domain_of(r.address))]
        accounts = await self.store.accounts_by_address(session, [r.address for r in local])
        for rcpt in local:
            account = accounts.get(rcpt.address.lower())
            if account is None or account.disabled:
                raise DeliveryError(f"no mailbox for {rcpt.address}")
            inbox = await self.store.mailbox(session, account.id, "INBOX")
            stored = await self.store.append(
                session, inbox, message.chunks, size=message.size, internal_date=message.received_at
            )
            report.stored.append((account.address, stored))
        if remote:
            await self.queue.enqueue(
                session,
                mail_from=message.mail_from,
                recipients=remote,
                chunks=message.chunks,
                size=message.size,
                lifetime=self._lifetime,
                queue_id=message.queue_id,
                envid=message.envid,
                ret=message.ret,
            )
            report.queued = [r.address for r in remote]
        if message.sender_account_id is not None:
            sent = await self.store.special_mailbox(session, message.sender_account_id, "\\Sent")
            report.sent_copy = await self.store.append(
                session,
                sent,
                message.chunks,
                size=message.size,
                flags=("\\Seen",),
                internal_date=message.received_at,
            )
        return report
