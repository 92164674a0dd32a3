"""What an IMAP session asks of the store, for one logged-in account (pymap's backend
interface, in small): mailboxes, the selected mailbox's changes, message metadata and
decrypted content, and the writes, each one transaction through the group committer.

The session never sees a key: reading goes through the ``MessageReader`` made when the login
unlocked the account; appending encrypts to the account's current key, as delivery does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from mailserver.encryption import AtRest, OwnerKey
from mailserver.imap.headercache import HeaderCache, HeaderCaches
from mailserver.store import headerindex
from mailserver.store.blobs import BlobNotFound
from mailserver.store.mailboxes import Changes, MailboxInfo, MailboxStore, MessageMeta, meta_row
from mailserver.store.mailstore import MailStore, NewMessage, StoredMessage
from mailserver.store.notify import MailboxEvents
from mailserver.store.reader import MessageReader
from mailserver.store.tables import Message
from openmss import audit
from openmss.db.commit import GroupCommitter
from openmss.db.engine import Database
from openmss.db.reads import Reads
from openmss.keyring.tables import AccountKey

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImapDeps:
    db: Database
    committer: GroupCommitter
    mailboxes: MailboxStore
    store: MailStore
    at_rest: AtRest
    events: MailboxEvents
    max_message_size: int
    header_caches: HeaderCaches


@dataclass(frozen=True)
class _Snapshot:
    """A mailbox's (UID, flags, mod-sequence) rows as of its mod-sequence ``modseq``."""

    uidvalidity: int
    modseq: int
    rows: list[tuple[int, str, int]]

    def updated(self, changed: list[tuple[int, str, int]], gone: list[int]) -> list[tuple[int, str, int]]:
        """The rows with the messages ``changed`` (added or with new flags) and without those
        ``gone`` (expunged), by ascending UID."""
        if not changed and not gone:
            return self.rows
        expunged = set(gone)
        replaced = expunged.union(uid for uid, _, _ in changed)
        rows = [row for row in self.rows if row[0] not in replaced]
        # On PostgreSQL the two reads may see different commits: expunged wins.
        rows.extend(row for row in changed if row[0] not in expunged)
        rows.sort()
        return rows


class AccountBackend:
    """One logged-in account's view of the store."""

    READ_AUDIT_DELAY = 1.0
    SNAPSHOTS = 4  # mailboxes whose rows a session keeps to re-open them quickly

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
        self._indexed: set[int] = set()  # message ids known to be in the header index
        self._to_index: list[tuple[int, bytes]] = []  # (message id, sealed header) to write
        self._flusher: asyncio.Task[None] | None = None
        self._snapshots: dict[int, _Snapshot] = {}  # by mailbox id, least recently opened first
        # Opened headers shared with the account's other sessions (see headercache).
        self.headers: HeaderCache = deps.header_caches.acquire(account_id)
        self._released = False

    async def _write(self, work: Callable[[Session], T], *, changed: Iterable[int] = ()) -> T:
        result: T = await self.deps.committer.run(work)
        self.deps.events.publish(changed)
        return result

    def _audit(self, session: Session, action: str, target: str, **detail: Any) -> None:
        audit.record(session, actor=self.address, action=action, target=target, peer=self.peer, **detail)

    # Mailboxes --------------------------------------------------------------------------------

    async def mailboxes(self) -> list[MailboxInfo]:
        async with self.deps.db.reads() as reads:
            return await self.deps.mailboxes.list_mailboxes(reads, self.account_id)

    async def mailbox(self, name: str) -> MailboxInfo | None:
        async with self.deps.db.reads() as reads:
            return await self.deps.mailboxes.get(reads, self.account_id, name)

    async def status(self, box: MailboxInfo) -> tuple[int, int]:
        async with self.deps.db.reads() as reads:
            return await self.deps.mailboxes.counts(reads, box.id)

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

    async def open(self, name: str) -> tuple[MailboxInfo, list[tuple[int, str, int]]] | None:
        """SELECT/EXAMINE (audited): the mailbox and (UID, flags, mod-sequence) of each message;
        None when there is no such mailbox.

        A mailbox this session opened before is brought up to date from what changed since
        (CONDSTORE's mod-sequences and the expunge records) instead of read whole: clients
        switch between a few folders all day. The mailbox is read first, the changes after:
        a change committed in between is in the changes and is applied again next time
        (applying one twice gives the same rows)."""
        mailboxes = self.deps.mailboxes
        async with self.deps.db.reads() as reads:
            info = await mailboxes.get(reads, self.account_id, name)
            if info is None:
                return None
            known = self._snapshots.pop(info.id, None)
            if known is not None and known.uidvalidity == info.uidvalidity:
                if known.modseq == info.modseq:
                    rows = known.rows
                else:
                    changed, gone = await mailboxes.index_since(reads, info.id, known.modseq)
                    rows = known.updated(changed, gone)
            else:
                rows = await mailboxes.index(reads, info.id)
        self._snapshots[info.id] = _Snapshot(info.uidvalidity, info.modseq, rows)
        while len(self._snapshots) > self.SNAPSHOTS:
            del self._snapshots[next(iter(self._snapshots))]  # the least recently opened
        self._selects.append(info.name)
        self._schedule_flush()
        return info, rows

    async def vanished(self, mailbox_id: int, since_modseq: int) -> list[int]:
        """UIDs expunged from the mailbox after ``since_modseq`` (RFC 7162 VANISHED), ascending."""
        async with self.deps.db.reads() as reads:
            return await self.deps.mailboxes.expunged_since(reads, mailbox_id, since_modseq)

    async def changes(self, mailbox_id: int, since_modseq: int, known_uidnext: int) -> Changes:
        async with self.deps.db.reads() as reads:
            return await self.deps.mailboxes.changes(reads, mailbox_id, since_modseq, known_uidnext)

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
            async with self.deps.db.reads() as reads:
                stored = await self._read_bodies(reads, missing)
            found.update(await self._open(missing, stored, mailbox_id))
        return found

    async def fetch_batches(
        self, mailbox_id: int, uids: Sequence[int], *, content: bool
    ) -> AsyncIterator[tuple[list[MessageMeta], dict[int, bytes]]]:
        """Metadata and, when asked, decrypted messages, batch by batch; one database session
        per batch (never two at once: see ``metas``)."""
        size = 50 if content else 2000
        for chunk in MailboxStore.batches(uids, size):
            async with self.deps.db.reads() as reads:
                if content:
                    # Messages already in the header index are not sealed and sent to it again.
                    batch, indexed, stored = await self.deps.mailboxes.metas_batch_with_bodies(
                        reads, mailbox_id, chunk
                    )
                    self._indexed.update(indexed)
                    found, missing = self._cached(batch, mailbox_id)
                    large = [meta for meta in missing if meta.blob_id not in stored]
                    if large:
                        stored.update(await self._read_bodies(reads, large))
                else:
                    batch = await self.deps.mailboxes.metas_batch(reads, mailbox_id, chunk)
                    found, missing, stored = {}, [], {}
            missing = [meta for meta in missing if meta.blob_id in stored]
            if missing:
                found.update(await self._open(missing, stored, mailbox_id))
            yield batch, found

    async def header_batches(
        self, mailbox_id: int, uids: Sequence[int], *, with_meta: bool
    ) -> AsyncIterator[tuple[list[MessageMeta], dict[int, bytes]]]:
        """Each message's top-level header (as its owner reads it) and, ``with_meta``, its
        metadata, batch by batch: from the sealed header index where it has the message, else
        by decrypting the message (which indexes it for the next search)."""
        for chunk in MailboxStore.batches(uids, 2000):
            params = {"box": mailbox_id, "lo": chunk[0], "hi": chunk[-1]}
            async with self.deps.db.reads() as reads:
                statement = headerindex.METAS_WITH_HEADERS if with_meta else headerindex.HEADERS
                rows = await reads.rows(statement, params)
            wanted = set(chunk)
            metas: list[MessageMeta] = []
            headers: dict[int, bytes] = {}
            unindexed: list[int] = []
            open_header = self.reader.open_header
            for row in rows:
                if row[1] not in wanted:
                    continue
                if with_meta:
                    meta = meta_row(row[:8])
                    metas.append(meta)
                    message_id, uid, blob_id, sealed = meta.id, meta.uid, meta.blob_id, row[8]
                else:
                    message_id, uid, blob_id, sealed = row
                header = open_header(message_id, blob_id, sealed) if sealed else None
                if header is None:
                    unindexed.append(uid)
                else:
                    self._indexed.add(message_id)
                    headers[uid] = header
            if unindexed:
                async for _, bodies in self.fetch_batches(mailbox_id, unindexed, content=True):
                    for uid, data in bodies.items():
                        headers[uid] = headerindex.header_block(data) or data
            yield metas, headers

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

    async def _read_bodies(self, reads: Reads, missing: Sequence[MessageMeta]) -> dict[int, bytes]:
        """The stored bodies, by blob id; one that is gone is left out: its message was expunged
        by another session after its metadata was read (PostgreSQL's reads are READ COMMITTED)."""
        stored = await self.deps.mailboxes.bodies(reads, [m.blob_id for m in missing])
        for meta in missing:
            if meta.blob_id not in stored:  # a large body: chunk by chunk
                with contextlib.suppress(BlobNotFound):
                    stored[meta.blob_id] = await self.deps.mailboxes.body(reads, meta)
        return stored

    async def _open(
        self, missing: Sequence[MessageMeta], stored: dict[int, bytes], mailbox_id: int
    ) -> dict[int, bytes]:
        def open_all() -> dict[int, bytes]:
            return {m.uid: self.reader.open(self._stored(m, mailbox_id), stored[m.blob_id]) for m in missing}

        small = len(missing) == 1 and missing[0].size <= 1 << 16
        opened = open_all() if small else await asyncio.to_thread(open_all)
        for meta in missing:
            self._queue_index(meta, opened[meta.uid])
        for uid, data in opened.items():
            self._cache[(mailbox_id, uid)] = data
            self._cache.move_to_end((mailbox_id, uid))
        while len(self._cache) > 8 or sum(len(v) for v in self._cache.values()) > 64 << 20:
            self._cache.popitem(last=False)
        return opened

    def _queue_index(self, meta: MessageMeta, message: bytes) -> None:
        """A message this session has read in full goes into the header index (written with the
        next audit flush), unless it is known to be there."""
        if meta.id in self._indexed:
            return
        header = headerindex.header_block(message)
        if header is not None:
            self._indexed.add(meta.id)
            self._to_index.append((meta.id, self.reader.seal_header(meta.id, meta.blob_id, header)))
            self._schedule_flush()

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
        entries, self._to_index = self._to_index, []
        if entries:
            try:
                await self.deps.committer.run(lambda session: headerindex.save(session, entries))
            except Exception:  # an index entry is a convenience: never fail the session for one
                log.warning("header index entries not written", exc_info=True)
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
        if not self._released:
            self._released = True
            self.deps.header_caches.release(self.account_id)
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

        header = headerindex.header_block(message)

        def work(session: Session) -> tuple[int, int]:
            [blob_id] = self.deps.store.blobs.put_many(session, [[copy.body]])
            [filed] = self.deps.store.file_many(
                session,
                [NewMessage(box.id, blob_id, copy.size, internal_date, tuple(flags), copy.decrypt_on_read)],
            )
            if header is not None:  # indexed at once: this session can seal for its owner
                message_id = session.scalar(
                    select(Message.id).where(Message.mailbox_id == box.id, Message.uid == filed.uid)
                )
                if message_id is not None:
                    sealed = self.reader.seal_header(message_id, blob_id, header)
                    headerindex.save(session, [(message_id, sealed)])
            return box.uidvalidity, filed.uid

        return await self._write(work, changed=[box.id])

    async def _current_key(self) -> OwnerKey | None:
        async with self.deps.db.reads() as reads:
            rows = await reads.rows(_CURRENT_KEY, {"account": self.account_id})
        row = rows[0] if rows else None
        return OwnerKey(str(row[0]), bytes(row[1]), str(row[2])) if row else None


_CURRENT_KEY = select(AccountKey.fingerprint, AccountKey.public, AccountKey.mode).where(
    AccountKey.account_id == bindparam("account"), AccountKey.current.is_(True)
)


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
