"""What an IMAP session asks of the store, for one logged-in account (pymap's backend
interface, in small): mailboxes, the selected mailbox's changes, message metadata and
decrypted content, and the writes, each one transaction through the group committer.

The session never sees a key: reading goes through the ``MessageReader`` made when the login
unlocked the account; appending encrypts to the account's current key, as delivery does.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from mailserver.encryption import AtRest, OwnerKey
from mailserver.store.mailboxes import Changes, MailboxError, MailboxInfo, MailboxStore, MessageMeta
from mailserver.store.mailstore import MailStore, NewMessage, StoredMessage
from mailserver.store.notify import MailboxEvents
from mailserver.store.reader import MessageReader
from openmss import audit
from openmss.db.commit import GroupCommitter
from openmss.db.engine import Database
from openmss.keyring.tables import AccountKey

T = TypeVar("T")


@dataclass(frozen=True)
class ImapDeps:
    db: Database
    committer: GroupCommitter
    mailboxes: MailboxStore
    store: MailStore
    at_rest: AtRest
    events: MailboxEvents
    max_message_size: int


class AccountBackend:
    """One logged-in account's view of the store."""

    READ_AUDIT_DELAY = 1.0

    def __init__(
        self, deps: ImapDeps, account_id: int, address: str, reader: MessageReader, peer: str
    ) -> None:
        self.deps = deps
        self.account_id = account_id
        self.address = address
        self.reader = reader
        self.peer = peer
        self._cache: OrderedDict[tuple[int, int], bytes] = OrderedDict()  # decrypted, in memory only
        self._reads: dict[str, set[int]] = {}
        self._selects: list[str] = []  # mailboxes opened, not yet in the audit trail
        self._flusher: asyncio.Task[None] | None = None

    async def _write(self, work: Callable[[Session], T], *, changed: Iterable[int] = ()) -> T:
        result: T = await self.deps.committer.run(work)
        self.deps.events.publish(changed)
        return result

    def _audit(self, session: Session, action: str, target: str, **detail: Any) -> None:
        audit.record(session, actor=self.address, action=action, target=target, peer=self.peer, **detail)

    # Mailboxes --------------------------------------------------------------------------------

    async def mailboxes(self) -> list[MailboxInfo]:
        async with self.deps.db.read() as session:
            return await self.deps.mailboxes.list_mailboxes(session, self.account_id)

    async def mailbox(self, name: str) -> MailboxInfo | None:
        async with self.deps.db.read() as session:
            return await self.deps.mailboxes.get(session, self.account_id, name)

    async def status(self, box: MailboxInfo) -> tuple[int, int]:
        async with self.deps.db.read() as session:
            return await self.deps.mailboxes.counts(session, box.id)

    async def create(self, name: str, special_use: str | None = None) -> None:
        await self._write(lambda s: self.deps.mailboxes.create(s, self.account_id, name, special_use))

    async def delete(self, name: str) -> None:
        box = await self.mailbox(name)
        await self._write(
            lambda s: self.deps.mailboxes.delete(s, self.account_id, name), changed=[box.id] if box else []
        )

    async def rename(self, old: str, new: str) -> None:
        box = await self.mailbox(old)
        await self._write(
            lambda s: self.deps.mailboxes.rename(s, self.account_id, old, new),
            changed=[box.id] if box else [],
        )

    async def subscribe(self, name: str, subscribed: bool) -> None:
        await self._write(lambda s: self.deps.mailboxes.subscribe(s, self.account_id, name, subscribed))

    # The selected mailbox ---------------------------------------------------------------------

    async def open(self, box: MailboxInfo) -> tuple[MailboxInfo, list[int], int | None, int]:
        """(fresh info, UIDs, first unseen UID, unseen count) for SELECT/EXAMINE; audited."""
        async with self.deps.db.read() as session:
            info = await self.deps.mailboxes.info(session, box.id)
            if info is None:
                raise MailboxError("no such mailbox", "NONEXISTENT")
            uids = await self.deps.mailboxes.uids(session, box.id)
            _, unseen, unseen_uid = await self.deps.mailboxes.summary(session, box.id)
        self._selects.append(info.name)
        self._schedule_flush()
        return info, uids, unseen_uid, unseen

    async def changes(self, mailbox_id: int, since_modseq: int, known_uidnext: int) -> Changes:
        async with self.deps.db.read() as session:
            return await self.deps.mailboxes.changes(session, mailbox_id, since_modseq, known_uidnext)

    async def flags(self, mailbox_id: int, uids: Sequence[int]) -> AsyncIterator[list[tuple[int, str, int]]]:
        """(UID, flags, mod-sequence) in batches: FETCH (FLAGS) and flag searches need no more."""
        for chunk in MailboxStore.batches(uids):
            async with self.deps.db.read() as session:
                batch = await self.deps.mailboxes.flags_batch(session, mailbox_id, chunk)
            yield batch

    def _stored(self, meta: MessageMeta, mailbox_id: int) -> StoredMessage:
        return StoredMessage(
            meta.id,
            mailbox_id,
            meta.uid,
            meta.blob_id,
            meta.size,
            meta.internal_date,
            meta.flags,
            meta.decrypt_on_read,
        )

    async def content(self, meta: MessageMeta, mailbox_id: int) -> bytes:
        """The message as its owner reads it (decrypted in memory); a small per-session cache."""
        return (await self.contents([meta], mailbox_id))[meta.uid]

    async def contents(self, metas: Sequence[MessageMeta], mailbox_id: int) -> dict[int, bytes]:
        """Several messages as their owner reads them: small bodies in one query, decrypted
        off the event loop. {UID: message}."""
        found, missing = self._cached(metas, mailbox_id)
        if missing:
            async with self.deps.db.read() as session:
                stored = await self._read_bodies(session, missing)
            found.update(await self._open(missing, stored, mailbox_id))
        return found

    async def fetch_batches(
        self, mailbox_id: int, uids: Sequence[int], *, content: bool
    ) -> AsyncIterator[tuple[list[MessageMeta], dict[int, bytes]]]:
        """Metadata and, when asked, decrypted messages, batch by batch; one database session
        per batch (never two at once: see ``metas``)."""
        size = 50 if content else 2000
        for chunk in MailboxStore.batches(uids, size):
            async with self.deps.db.read() as session:
                batch = await self.deps.mailboxes.metas_batch(session, mailbox_id, chunk)
                found, missing = self._cached(batch, mailbox_id) if content else ({}, [])
                stored = await self._read_bodies(session, missing) if missing else {}
            if missing:
                found.update(await self._open(missing, stored, mailbox_id))
            yield batch, found

    def _cached(
        self, metas: Sequence[MessageMeta], mailbox_id: int
    ) -> tuple[dict[int, bytes], list[MessageMeta]]:
        found: dict[int, bytes] = {}
        missing: list[MessageMeta] = []
        for meta in metas:
            cached = self._cache.get((mailbox_id, meta.uid))
            if cached is not None:
                found[meta.uid] = cached
            else:
                missing.append(meta)
        return found, missing

    async def _read_bodies(self, session: AsyncSession, missing: Sequence[MessageMeta]) -> dict[int, bytes]:
        stored = await self.deps.mailboxes.bodies(session, [m.blob_id for m in missing])
        for meta in missing:
            if meta.blob_id not in stored:  # a large body: chunk by chunk
                stored[meta.blob_id] = await self.deps.mailboxes.body(session, meta)
        return stored

    async def _open(
        self, missing: Sequence[MessageMeta], stored: dict[int, bytes], mailbox_id: int
    ) -> dict[int, bytes]:
        def open_all() -> dict[int, bytes]:
            return {m.uid: self.reader.open(self._stored(m, mailbox_id), stored[m.blob_id]) for m in missing}

        small = len(missing) == 1 and missing[0].size <= 1 << 16
        opened = open_all() if small else await asyncio.to_thread(open_all)
        for uid, data in opened.items():
            self._cache[(mailbox_id, uid)] = data
            self._cache.move_to_end((mailbox_id, uid))
        while len(self._cache) > 8 or sum(len(v) for v in self._cache.values()) > 64 << 20:
            self._cache.popitem(last=False)
        return opened

    async def record_read(self, mailbox: str, uids: Sequence[int]) -> None:
        """Every read of message content (and every SELECT) leaves a trace in the audit trail.
        They are gathered
        and written within a second (one event per mailbox and second, with the UIDs), and
        always before the session ends: a client fetching one message per command (mbsync)
        must not wait for a durable commit per message."""
        if not uids:
            return
        self._reads.setdefault(mailbox, set()).update(uids)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_reads_later())

    async def _flush_reads_later(self) -> None:
        await asyncio.sleep(self.READ_AUDIT_DELAY)
        await self.flush_reads()

    async def flush_reads(self) -> None:
        selects, self._selects = self._selects, []
        pending, self._reads = self._reads, {}
        if selects:

            def opened(session: Session) -> None:
                for name in selects:
                    self._audit(session, "imap.mailbox.select", f"{self.address}/{name}")

            await self.deps.committer.run(opened)
        for mailbox, uids in pending.items():
            target, read = f"{self.address}/{mailbox}", _ranges(sorted(uids))

            def work(session: Session, target: str = target, read: str = read) -> None:
                self._audit(session, "imap.message.read", target, uids=read)

            await self.deps.committer.run(work)

    async def close(self) -> None:
        """The session ends: what was read is in the audit trail before we let go."""
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
        await self.flush_reads()

    # Writes -----------------------------------------------------------------------------------

    async def store_flags(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        mode: str,
        flags: Sequence[str],
        unchanged_since: int | None,
    ) -> tuple[list[MessageMeta], list[int]]:
        return await self._write(
            lambda s: self.deps.mailboxes.store_flags(
                s, mailbox_id, uids, mode, flags, unchanged_since=unchanged_since
            ),
            changed=[mailbox_id],
        )

    async def copy(self, mailbox_id: int, uids: Sequence[int], target: MailboxInfo) -> list[tuple[int, int]]:
        return await self._write(
            lambda s: self.deps.mailboxes.copy(s, mailbox_id, uids, target.id), changed=[target.id]
        )

    async def move(self, mailbox_id: int, uids: Sequence[int], target: MailboxInfo) -> list[tuple[int, int]]:
        """MOVE (RFC 6851): copy and expunge in one transaction."""

        def work(session: Session) -> list[tuple[int, int]]:
            pairs = self.deps.mailboxes.copy(session, mailbox_id, uids, target.id)
            self.deps.mailboxes.expunge(session, mailbox_id, [src for src, _ in pairs])
            return pairs

        return await self._write(work, changed=[mailbox_id, target.id])

    async def expunge(self, mailbox_id: int, uids: Sequence[int] | None) -> list[int]:
        """Messages flagged \\Deleted (among ``uids`` when given: UID EXPUNGE)."""

        return await self._write(
            lambda s: self.deps.mailboxes.expunge(s, mailbox_id, uids, deleted_only=True),
            changed=[mailbox_id],
        )

    async def append(
        self, box: MailboxInfo, message: bytes, flags: Sequence[str], internal_date: datetime
    ) -> tuple[int, int]:
        """APPEND (RFC 3501 §6.3.11): stored encrypted to the account's current key, like every
        delivered message. Returns (UIDVALIDITY, UID) for APPENDUID (RFC 4315 §3)."""
        key = await self._current_key()
        copies = await asyncio.to_thread(self.deps.at_rest.copies, message, {self.account_id: key})
        copy = copies[self.account_id]

        def work(session: Session) -> tuple[int, int]:
            [blob_id] = self.deps.store.blobs.put_many(session, [[copy.body]])
            [filed] = self.deps.store.file_many(
                session,
                [NewMessage(box.id, blob_id, copy.size, internal_date, tuple(flags), copy.decrypt_on_read)],
            )
            return box.uidvalidity, filed.uid

        return await self._write(work, changed=[box.id])

    async def _current_key(self) -> OwnerKey | None:
        async with self.deps.db.read() as session:
            row = (
                await session.execute(
                    select(AccountKey.fingerprint, AccountKey.public, AccountKey.mode).where(
                        AccountKey.account_id == self.account_id, AccountKey.current.is_(True)
                    )
                )
            ).first()
        return OwnerKey(str(row[0]), bytes(row[1]), str(row[2])) if row else None


def _ranges(uids: Sequence[int]) -> str:
    """``1:5,8,10:12``: a compact list for the audit trail."""
    ordered = sorted(set(uids))
    parts: list[str] = []
    start = prev = ordered[0]
    for uid in [*ordered[1:], 0]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = uid
    return ",".join(parts)
