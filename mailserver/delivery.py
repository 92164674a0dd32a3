"""Routing and delivery of accepted messages: local mailboxes, the Sent copy, the queue.

Everything happens in the caller's transaction, so a message is either stored for every local
recipient and queued for every remote one, or for none. ``deliver_many`` stores a whole group
of messages (the group commit's batch) with a constant number of statements: one body blob per
message, shared by its local copies and its queue entry.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from directory.policy import ConversationUpdate
from directory.trust import TrustListSource
from mailserver.encryption import AtRest
from mailserver.queue.sealed import SealedBlobStore
from mailserver.queue.store import NewQueued, QueueStore, RecipientSpec, domain_of
from mailserver.signatures import SignatureChecker
from mailserver.store.blobs import BlobStore, DatabaseBlobStore
from mailserver.store.mailstore import FiledMessage, MailStore, NewMessage
from mailserver.targets import Targets, find_targets
from openmss.crypto.queuekey import load_queue_key
from openmss.db.commit import BatchHandler
from openmss.db.engine import Database
from openmss.settings import Settings

RecordConversations = Callable[[Session, Sequence[ConversationUpdate], datetime], None]


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
    # What the messaging policy records when this message is stored (directory.conversations):
    # written in the same transaction as the message.
    conversations: Sequence[ConversationUpdate] = ()


@dataclass
class DeliveryReport:
    stored: list[tuple[str, FiledMessage]] = field(default_factory=list)  # (address, message)
    sent_copy: FiledMessage | None = None
    queued: list[str] = field(default_factory=list)


class _AccountCache:
    """Which local addresses have an active mailbox, remembered for a few seconds.

    RCPT TO is answered from here; the delivery transaction checks again, so an account removed
    in the meantime gets a temporary failure at the end of DATA, never a lost message.
    """

    def __init__(self, ttl: float = 5.0, max_entries: int = 50_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._entries: dict[str, tuple[bool, float]] = {}

    def get(self, address: str) -> bool | None:
        entry = self._entries.get(address)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, address: str, exists: bool) -> None:
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[address] = (exists, time.monotonic() + self._ttl)


class Delivery:
    def __init__(
        self,
        *,
        db: Database,
        local_domains: Sequence[str],
        store: MailStore,
        queue: QueueStore,
        trust: TrustListSource,
        queue_lifetime: timedelta,
        account_cache_seconds: float = 5.0,
        at_rest: AtRest | None = None,
        annotate: Callable[[Session, bytes], bytes] | None = None,
        record_conversations: RecordConversations | None = None,
        postmaster: str = "",
    ) -> None:
        self._db = db
        self._domains = frozenset(d.lower() for d in local_domains)
        self.store = store
        self.queue = queue
        self._trust = trust
        self._lifetime = queue_lifetime
        self._accounts = _AccountCache(account_cache_seconds)
        self.at_rest = at_rest or AtRest()
        # Called on every message before it is stored (signature verification adds its
        # Authentication-Results field there).
        self._annotate = annotate
        self._record_conversations = record_conversations
        self._postmaster = postmaster.strip().lower()

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower().rstrip(".") in self._domains

    async def route(self, address: str) -> Route:
        domain = domain_of(address)
        if self.is_local_domain(domain):
            has_mailbox = await self._has_mailbox(await self.resolve(address))
            return Route.LOCAL if has_mailbox else Route.UNKNOWN_LOCAL
        if self._trust.current().is_trusted_domain(domain):
            return Route.REMOTE
        return Route.UNTRUSTED

    async def resolve(self, address: str) -> str:
        """The local address whose mailbox receives mail to ``address``: itself, except
        postmaster@<one of our domains> (any case, RFC 5321 §4.1.1.3) without an account of its
        own, which goes to the ``postmaster`` account when one is configured (RFC 5321 §4.5.1)."""
        local, _, domain = address.rpartition("@")
        if (
            self._postmaster
            and local.lower() == "postmaster"
            and self.is_local_domain(domain)
            and not await self._has_mailbox(address)
        ):
            return self._postmaster
        return address

    async def _has_mailbox(self, address: str) -> bool:
        key = address.lower()
        exists = self._accounts.get(key)
        if exists is None:
            async with self._db.read() as session:
                account = await self.store.account_by_address(session, key)
            exists = account is not None and not account.disabled
            self._accounts.put(key, exists)
        return exists

    def deliver(self, session: Session, message: AcceptedMessage) -> DeliveryReport:
        [report] = self.deliver_many(session, [message])
        return report

    def deliver_many(self, session: Session, messages: Sequence[AcceptedMessage]) -> list[DeliveryReport]:
        """Store a group of messages (in the writer thread); one report per message, in order.

        Every copy filed in a mailbox is encrypted to its owner's key (``AtRest``); the copy
        for the outbound queue goes to the queue's own (sealed) blob store.
        """
        local = [[r for r in m.recipients if self.is_local_domain(domain_of(r.address))] for m in messages]
        targets = self._target_boxes(
            session,
            {r.address.lower() for rcpts in local for r in rcpts},
            {m.sender_account_id for m in messages if m.sender_account_id is not None},
        )
        for rcpts in local:
            for r in rcpts:
                if r.address.lower() not in targets.inboxes:
                    raise DeliveryError(f"no mailbox for {r.address}")
        bodies: list[bytes] = []  # distinct stored copies, in order
        filed: list[NewMessage] = []
        body_of_filed: list[int] = []  # index into bodies, per filed message
        owners: list[tuple[int, str | None]] = []  # (message index, local address or None for Sent)
        queued: list[NewQueued] = []
        queue_bodies: list[Sequence[bytes | memoryview]] = []
        for index, (message, rcpts) in enumerate(zip(messages, local, strict=True)):
            content = b"".join(message.chunks)
            if self._annotate is not None:
                content = self._annotate(session, content)
            # Who gets a copy: each recipient's INBOX, the sender's Sent.
            boxes: list[tuple[int, int, str | None, tuple[str, ...]]] = []  # (box, account, address, flags)
            for r in rcpts:
                box, account_id = targets.inboxes[r.address.lower()]
                boxes.append((box, account_id, r.address.lower(), ()))
            if message.sender_account_id is not None:
                boxes.append(
                    (targets.sent[message.sender_account_id], message.sender_account_id, None, ("\\Seen",))
                )
            copies = self.at_rest.copies(
                content,
                {account: targets.keys.get(account) for _, account, _, _ in boxes},
                sender=message.sender_account_id,
            )
            stored_at: dict[int, int] = {}
            for box, account_id, address, flags in boxes:
                copy = copies[account_id]
                if id(copy) not in stored_at:
                    stored_at[id(copy)] = len(bodies)
                    bodies.append(copy.body)
                filed.append(
                    NewMessage(
                        box, 0, copy.size, message.received_at, flags, decrypt_on_read=copy.decrypt_on_read
                    )
                )
                body_of_filed.append(stored_at[id(copy)])
                owners.append((index, address))
            remote = [r for r in message.recipients if not self.is_local_domain(domain_of(r.address))]
            if remote:
                queued.append(
                    NewQueued(
                        queue_id=message.queue_id,
                        mail_from=message.mail_from,
                        recipients=remote,
                        blob_id=0,
                        size=len(content),
                        envid=message.envid,
                        ret=message.ret,
                    )
                )
                queue_bodies.append([content])
        blob_ids = self.store.blobs.put_many(session, [[b] for b in bodies])
        filed = [replace(item, blob_id=blob_ids[i]) for item, i in zip(filed, body_of_filed, strict=True)]
        queue_ids = self.queue.blobs.put_many(session, queue_bodies)
        queued = [replace(item, blob_id=blob_id) for item, blob_id in zip(queued, queue_ids, strict=True)]
        stored = self.store.file_many(session, filed, boxes=targets.boxes)
        self.queue.enqueue_many(session, queued, lifetime=self._lifetime)
        for message in messages:
            if message.conversations:
                if self._record_conversations is None:
                    raise DeliveryError("this delivery cannot record the messaging policy's state")
                self._record_conversations(session, message.conversations, message.received_at)
        reports = [DeliveryReport() for _ in messages]
        for (index, address), filed_copy in zip(owners, stored, strict=True):
            if address is None:
                reports[index].sent_copy = filed_copy
            else:
                reports[index].stored.append((address, filed_copy))
        for item in queued:
            index = next(i for i, m in enumerate(messages) if m.queue_id == item.queue_id)
            reports[index].queued = [r.address for r in item.recipients]
        return reports

    def _target_boxes(self, session: Session, addresses: set[str], sender_ids: set[int]) -> Targets:
        """Every mailbox a group of messages goes to (``mailserver.targets``), locked on
        PostgreSQL until the transaction ends."""
        targets = find_targets(session.connection(), addresses, sender_ids)
        missing = sender_ids - targets.sent.keys()
        if missing:
            raise DeliveryError(f"no Sent mailbox for account(s) {sorted(missing)}")
        return targets


def build_stores(settings: Settings) -> tuple[MailStore, QueueStore]:
    """The mail store and the queue store as the settings want them: queued bodies sealed with
    the queue key when encryption at rest is on (it always is, outside benchmarks)."""
    blobs = DatabaseBlobStore()
    queue_blobs: BlobStore = blobs
    if settings.encrypt_mail:
        key = load_queue_key(settings.queue_key, settings.effective_queue_key_file)
        queue_blobs = SealedBlobStore(blobs, key)
    return MailStore(blobs), QueueStore(queue_blobs)


def build_delivery(settings: Settings, db: Database, trust: TrustListSource) -> Delivery:
    from directory.keys import KeyDirectory

    store, queue = build_stores(settings)
    keys = KeyDirectory(None, settings.domains)
    signatures = SignatureChecker(
        settings.hostname,
        lambda session, address: keys.certs_for_sync(session, address, include_revoked=True),
    )
    from directory.conversations import record

    return Delivery(
        db=db,
        local_domains=settings.domains,
        store=store,
        queue=queue,
        trust=trust,
        queue_lifetime=timedelta(seconds=settings.queue_lifetime_seconds),
        at_rest=AtRest(enabled=settings.encrypt_mail),
        annotate=signatures.annotate,
        record_conversations=record,
        postmaster=settings.postmaster,
    )


def storage_handlers(config: dict[str, Any]) -> tuple[Database, dict[str, BatchHandler]]:
    """Build, in the storage worker process, what stores accepted messages (see
    ``openmss.db.commit.ProcessBackend``): ``config`` is the settings as JSON-able values."""
    settings = Settings(**config)
    db = Database(settings.effective_database_url)
    # Routing was decided in the SMTP session: no trust list needed here.
    delivery = build_delivery(settings, db, TrustListSource.empty())
    return db, {"deliver": delivery.deliver_many}
