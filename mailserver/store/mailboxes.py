"""Mailbox operations for sessions (IMAP, the webmail): the storage interface behind them.

Reads are async (the event loop); writes are synchronous functions run by the caller's
writer (the group committer), each inside one transaction. Every write that changes a
mailbox takes the mailbox's next mod-sequence (RFC 7162 §3.1.1), records expunged UIDs, and
notifies other instances (``notify_changed``); the caller publishes to this process's
sessions after the commit.

Nothing here loads a mailbox into memory: metadata is streamed by UID ranges, bodies are
read one message at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from mailserver.store.blobs import BlobNotFound, BlobStore
from mailserver.store.mailstore import new_uidvalidity
from mailserver.store.notify import notify_changed
from mailserver.store.tables import Blob, BlobChunk, ExpungedMessage, Mailbox, Message, MessageHeader
from openmss.db.base import table, utcnow
from openmss.db.driver import DriverSelect
from openmss.db.reads import Reads

SEPARATOR = "/"
_BATCH = 2000  # rows per query when streaming metadata


class MailboxError(ValueError):
    """A request on mailboxes that cannot be honoured; ``code`` is an IMAP response code."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class MailboxInfo:
    id: int
    name: str
    special_use: str | None
    subscribed: bool
    uidvalidity: int
    uidnext: int
    modseq: int


@dataclass(frozen=True)
class MessageMeta:
    id: int
    uid: int
    flags: tuple[str, ...]
    internal_date: datetime
    size: int
    modseq: int
    blob_id: int
    decrypt_on_read: bool


@dataclass
class Changes:
    """What changed in a mailbox since a session's view (``since_modseq``, ``known_uidnext``)."""

    modseq: int
    uidnext: int
    new: list[MessageMeta] = field(default_factory=list)  # uid >= known_uidnext, ascending
    updated: list[MessageMeta] = field(default_factory=list)  # known UIDs whose flags changed
    expunged: list[int] = field(default_factory=list)  # UIDs, ascending


def _info(box: Mailbox) -> MailboxInfo:
    return MailboxInfo(
        box.id, box.name, box.special_use, box.subscribed, box.uidvalidity, box.uidnext, box.modseq
    )


_BOX_COLUMNS = (
    Mailbox.id,
    Mailbox.name,
    Mailbox.special_use,
    Mailbox.subscribed,
    Mailbox.uidvalidity,
    Mailbox.uidnext,
    Mailbox.modseq,
)


def _box_row(row: Any) -> MailboxInfo:
    box_id, name, special_use, subscribed, uidvalidity, uidnext, modseq = row
    return MailboxInfo(box_id, name, special_use, bool(subscribed), uidvalidity, uidnext, modseq)


def _meta(row: Message) -> MessageMeta:
    return MessageMeta(
        row.id,
        row.uid,
        tuple(row.flags.split()) if row.flags else (),
        row.internal_date,
        row.size,
        row.modseq,
        row.blob_id,
        row.decrypt_on_read,
    )


def normalize_name(name: str) -> str:
    """``INBOX`` is case-insensitive (RFC 3501 §5.1); trailing separators are dropped."""
    name = name.rstrip(SEPARATOR)
    head, sep, rest = name.partition(SEPARATOR)
    if head.upper() == "INBOX":
        return "INBOX" + sep + rest
    return name


def check_name(name: str) -> str:
    name = normalize_name(name)
    if not name or any(part == "" for part in name.split(SEPARATOR)):
        raise MailboxError("invalid mailbox name", "CANNOT")
    if len(name) > 512 or any(ord(c) < 0x20 or c in "*%" for c in name):
        raise MailboxError("mailbox names may not contain * % or control characters", "CANNOT")
    return name


META_COLUMNS = (
    Message.id,
    Message.uid,
    Message.flags,
    Message.internal_date,
    Message.size,
    Message.modseq,
    Message.blob_id,
    Message.decrypt_on_read,
)


def meta_row(row: Any) -> MessageMeta:
    """A ``MessageMeta`` from a row of the ``META_COLUMNS`` (in that order)."""
    mid, uid, flags, date, size, modseq, blob, dor = row
    return MessageMeta(mid, uid, tuple(flags.split()) if flags else (), date, size, modseq, blob, bool(dor))


async def _batch_rows(
    reads: Reads, statement: Executable | DriverSelect, mailbox_id: int, chunk: Sequence[int]
) -> list[Any]:
    """The rows of one batch of UIDs (ascending), read by UID range (``uid`` second)."""
    if not chunk:
        return []
    rows = await reads.rows(statement, {"box": mailbox_id, "lo": chunk[0], "hi": chunk[-1]})
    if chunk[-1] - chunk[0] + 1 == len(chunk):
        return list(rows)
    wanted = set(chunk)
    return [row for row in rows if row[1] in wanted]


class _Q:
    """The read statements, built once (see ``openmss.db.reads.Reads``)."""

    boxes = select(*_BOX_COLUMNS).where(Mailbox.account_id == bindparam("account")).order_by(Mailbox.name)
    box_named = select(*_BOX_COLUMNS).where(
        Mailbox.account_id == bindparam("account"), Mailbox.name == bindparam("name")
    )
    box = select(*_BOX_COLUMNS).where(Mailbox.id == bindparam("box"))
    _unseen = ~Message.flags.contains("\\Seen", autoescape=True)
    summary = select(
        func.count(),
        func.sum(case((_unseen, 1), else_=0)),
        func.min(case((_unseen, Message.uid), else_=None)),
    ).where(Message.mailbox_id == bindparam("box"))
    index = (
        select(Message.uid, Message.flags, Message.modseq)
        .where(Message.mailbox_id == bindparam("box"))
        .order_by(Message.uid)
    )
    metas = (
        select(*META_COLUMNS)
        .where(
            Message.mailbox_id == bindparam("box"),
            Message.uid >= bindparam("lo"),
            Message.uid <= bindparam("hi"),
        )
        .order_by(Message.uid)
    )
    # The same, with whether each message has an entry in the sealed header index, and the
    # stored message when it is one chunk (most are): a client's FETCH of one message's body
    # is then one query.
    metas_indexed_bodies = DriverSelect(
        metas.add_columns(MessageHeader.message_id.is_not(None), BlobChunk.data)
        .outerjoin(MessageHeader, MessageHeader.message_id == Message.id)
        .outerjoin(Blob, and_(Blob.id == Message.blob_id, Blob.chunk_count == 1))
        .outerjoin(BlobChunk, and_(BlobChunk.blob_id == Blob.id, BlobChunk.seq == 0))
    )
    _one_chunk_bodies = (
        select(Blob.id, BlobChunk.data)
        .join(BlobChunk, BlobChunk.blob_id == Blob.id)
        .where(Blob.chunk_count == 1)
    )
    small_bodies = _one_chunk_bodies.where(Blob.id.in_(bindparam("ids", expanding=True)))
    # One body, as a client downloads them (a FETCH per message).
    small_body = DriverSelect(_one_chunk_bodies.where(Blob.id == bindparam("id")))
    index_changed = (
        select(Message.uid, Message.flags, Message.modseq)
        .where(Message.mailbox_id == bindparam("box"), Message.modseq > bindparam("since"))
        .order_by(Message.uid)
    )
    changed = (
        select(*META_COLUMNS)
        .where(Message.mailbox_id == bindparam("box"), Message.modseq > bindparam("since"))
        .order_by(Message.uid)
    )
    expunged = (
        select(ExpungedMessage.uid)
        .where(ExpungedMessage.mailbox_id == bindparam("box"), ExpungedMessage.modseq > bindparam("since"))
        .order_by(ExpungedMessage.uid)
    )
    chunk_count = select(Blob.chunk_count).where(Blob.id == bindparam("blob"))
    chunk = select(BlobChunk.data).where(
        BlobChunk.blob_id == bindparam("blob"), BlobChunk.seq == bindparam("seq")
    )


class MailboxStore:
    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    # Mailboxes: reads (``Reads``: prebuilt Core statements, see openmss.db.reads) ---------

    async def list_mailboxes(self, reads: Reads, account_id: int) -> list[MailboxInfo]:
        return [_box_row(row) for row in await reads.rows(_Q.boxes, {"account": account_id})]

    async def get(self, reads: Reads, account_id: int, name: str) -> MailboxInfo | None:
        rows = await reads.rows(_Q.box_named, {"account": account_id, "name": normalize_name(name)})
        return _box_row(rows[0]) if rows else None

    async def info(self, reads: Reads, mailbox_id: int) -> MailboxInfo | None:
        rows = await reads.rows(_Q.box, {"box": mailbox_id})
        return _box_row(rows[0]) if rows else None

    async def counts(self, reads: Reads, mailbox_id: int) -> tuple[int, int]:
        """(messages, unseen)."""
        total, unseen, _ = await self.summary(reads, mailbox_id)
        return total, unseen

    async def summary(self, reads: Reads, mailbox_id: int) -> tuple[int, int, int | None]:
        """(messages, unseen, first unseen UID) in one pass over the mailbox's rows."""
        [row] = await reads.rows(_Q.summary, {"box": mailbox_id})
        return int(row[0] or 0), int(row[1] or 0), int(row[2]) if row[2] is not None else None

    # Messages: reads ------------------------------------------------------------------------

    async def index(self, reads: Reads, mailbox_id: int) -> list[tuple[int, str, int]]:
        """(UID, flags as stored, mod-sequence) of every message, by ascending UID: what a
        session keeps of its selected mailbox (see ``mailserver.imap.view``)."""
        rows = await reads.rows(_Q.index, {"box": mailbox_id})
        return [(int(uid), flags, int(modseq)) for uid, flags, modseq in rows]

    async def index_since(
        self, reads: Reads, mailbox_id: int, since_modseq: int
    ) -> tuple[list[tuple[int, str, int]], list[int]]:
        """What ``index`` would show differently than it did at ``since_modseq``: the rows of
        the messages added or changed since (ascending UID) and the UIDs expunged since."""
        params = {"box": mailbox_id, "since": since_modseq}
        rows = await reads.rows(_Q.index_changed, params)
        gone = await reads.rows(_Q.expunged, params)
        return [(int(uid), flags, int(modseq)) for uid, flags, modseq in rows], [int(u) for (u,) in gone]

    @staticmethod
    def batches(uids: Sequence[int], size: int = _BATCH) -> list[list[int]]:
        """The UIDs (ascending) cut into batches (of up to 2,000), each read with one query."""
        ordered = sorted(uids)
        return [ordered[start : start + size] for start in range(0, len(ordered), size)]

    async def metas_batch(self, reads: Reads, mailbox_id: int, chunk: Sequence[int]) -> list[MessageMeta]:
        """Metadata of one batch of UIDs (ascending), read by UID range."""
        return [meta_row(row) for row in await _batch_rows(reads, _Q.metas, mailbox_id, chunk)]

    async def metas_batch_with_bodies(
        self, reads: Reads, mailbox_id: int, chunk: Sequence[int]
    ) -> tuple[list[MessageMeta], set[int], dict[int, bytes]]:
        """``metas_batch``; the ids of those messages the sealed header index holds; and the
        stored messages of one chunk, by blob id (read the others with ``body``)."""
        rows = await _batch_rows(reads, _Q.metas_indexed_bodies, mailbox_id, chunk)
        metas = [meta_row(row[:8]) for row in rows]
        indexed = {int(row[0]) for row in rows if row[8]}
        return metas, indexed, {int(row[6]): bytes(row[9]) for row in rows if row[9] is not None}

    async def bodies(self, reads: Reads, blob_ids: Sequence[int]) -> dict[int, bytes]:
        """Several small bodies in one query (a batch of messages to search); bodies of more
        than one chunk are left out: read them with ``body``."""
        if not blob_ids:
            return {}
        ids = sorted(set(blob_ids))
        if len(ids) == 1:
            rows = await reads.rows(_Q.small_body, {"id": ids[0]})
        else:
            rows = await reads.rows(_Q.small_bodies, {"ids": ids})
        return {int(blob_id): bytes(data) for blob_id, data in rows}

    async def changes(self, reads: Reads, mailbox_id: int, since_modseq: int, known_uidnext: int) -> Changes:
        box = await self.info(reads, mailbox_id)
        if box is None:
            raise MailboxError("the mailbox was deleted", "NONEXISTENT")
        changes = Changes(box.modseq, box.uidnext)
        if box.modseq <= since_modseq:
            return changes
        params = {"box": mailbox_id, "since": since_modseq}
        for row in await reads.rows(_Q.changed, params):
            meta = meta_row(tuple(row))
            (changes.new if meta.uid >= known_uidnext else changes.updated).append(meta)
        gone = await reads.rows(_Q.expunged, params)
        changes.expunged = [int(u) for (u,) in gone if int(u) < known_uidnext]
        return changes

    async def expunged_since(self, reads: Reads, mailbox_id: int, since_modseq: int) -> list[int]:
        """UIDs expunged after ``since_modseq``, ascending (expunge records are kept as long as
        the mailbox: QRESYNC's VANISHED (EARLIER) is exact)."""
        rows = await reads.rows(_Q.expunged, {"box": mailbox_id, "since": since_modseq})
        return [int(uid) for (uid,) in rows]

    async def body(self, reads: Reads, meta: MessageMeta) -> bytes:
        """A whole message as stored, chunk by chunk (a large one: see ``bodies``)."""
        count = await reads.scalar(_Q.chunk_count, {"blob": meta.blob_id})
        if count is None:
            raise BlobNotFound(meta.blob_id)
        parts: list[bytes] = []
        for seq in range(count):
            data = await reads.scalar(_Q.chunk, {"blob": meta.blob_id, "seq": seq})
            if data is None:
                raise BlobNotFound(f"{meta.blob_id}/{seq}")
            parts.append(bytes(data))
        return b"".join(parts)

    # Mailboxes: writes (synchronous, inside the caller's transaction) -------------------------

    @staticmethod
    def _box(session: Session, account_id: int, name: str) -> Mailbox | None:
        return session.scalars(
            select(Mailbox).where(Mailbox.account_id == account_id, Mailbox.name == normalize_name(name))
        ).first()

    def create(self, session: Session, account_id: int, name: str, special_use: str | None = None) -> int:
        name = check_name(name)
        if self._box(session, account_id, name) is not None:
            raise MailboxError("that mailbox already exists", "ALREADYEXISTS")
        if special_use is not None:
            taken = session.scalar(
                select(Mailbox.id).where(Mailbox.account_id == account_id, Mailbox.special_use == special_use)
            )
            if taken is not None:
                raise MailboxError(f"another mailbox is already {special_use}", "USEATTR")
        box = Mailbox(
            account_id=account_id, name=name, special_use=special_use, uidvalidity=new_uidvalidity()
        )
        session.add(box)
        session.flush()
        return box.id

    def delete(self, session: Session, account_id: int, name: str) -> list[int]:
        """Delete a mailbox and its messages (RFC 3501 §6.3.4); its children stay. Returns the
        ids of blobs that no message refers to any more (already deleted)."""
        box = self._box(session, account_id, name)
        if box is None:
            raise MailboxError("no such mailbox", "NONEXISTENT")
        if box.name == "INBOX":
            raise MailboxError("INBOX cannot be deleted", "CANNOT")
        blob_ids = list(session.scalars(select(Message.blob_id).where(Message.mailbox_id == box.id)))
        session.execute(delete(Message).where(Message.mailbox_id == box.id))
        session.execute(delete(ExpungedMessage).where(ExpungedMessage.mailbox_id == box.id))
        session.delete(box)
        session.flush()
        notify_changed(session.connection(), [box.id])
        return self._drop_orphans(session, blob_ids)

    def rename(self, session: Session, account_id: int, old: str, new: str) -> None:
        """RFC 3501 §6.3.5: children follow; renaming INBOX moves its messages to a new mailbox
        and leaves INBOX empty."""
        new = check_name(new)
        box = self._box(session, account_id, old)
        if box is None:
            raise MailboxError("no such mailbox", "NONEXISTENT")
        if self._box(session, account_id, new) is not None:
            raise MailboxError("the new name is taken", "ALREADYEXISTS")
        if box.name == "INBOX":
            target = self.create(session, account_id, new)
            self._move_all(session, box, target)
            return
        prefix = box.name + SEPARATOR
        children = session.scalars(
            select(Mailbox).where(
                Mailbox.account_id == account_id, Mailbox.name.startswith(prefix, autoescape=True)
            )
        ).all()
        box.name = new
        for child in children:
            child.name = new + SEPARATOR + child.name[len(prefix) :]
        session.flush()

    def _move_all(self, session: Session, source: Mailbox, target_id: int) -> None:
        uids = list(
            session.scalars(select(Message.uid).where(Message.mailbox_id == source.id).order_by(Message.uid))
        )
        if uids:
            self.copy(session, source.id, uids, target_id)
            self.expunge(session, source.id, uids)

    def subscribe(self, session: Session, account_id: int, name: str, subscribed: bool) -> None:
        box = self._box(session, account_id, name)
        if box is None:
            raise MailboxError("no such mailbox", "NONEXISTENT")
        box.subscribed = subscribed

    # Messages: writes ---------------------------------------------------------------------------

    @staticmethod
    def _next_modseq(session: Session, mailbox_id: int) -> int:
        conn = session.connection()
        query = select(Mailbox.modseq).where(Mailbox.id == mailbox_id)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        current = conn.execute(query).scalar()
        if current is None:
            raise MailboxError("the mailbox was deleted", "NONEXISTENT")
        modseq = int(current) + 1
        conn.execute(update(table(Mailbox)).where(table(Mailbox).c.id == mailbox_id).values(modseq=modseq))
        return modseq

    def store_flags(
        self,
        session: Session,
        mailbox_id: int,
        uids: Iterable[int],
        mode: str,
        flags: Iterable[str],
        *,
        unchanged_since: int | None = None,
    ) -> tuple[list[MessageMeta], list[int]]:
        """STORE (RFC 3501 §6.4.6): ``mode`` is "+", "-" or "" (replace). Returns the messages
        whose flags changed (with their new mod-sequence) and, with UNCHANGEDSINCE (RFC 7162
        §3.1.3), the UIDs that were modified since and left alone."""
        wanted = sorted(set(uids))
        given = list(dict.fromkeys(flags))
        changed: list[MessageMeta] = []
        refused: list[int] = []
        if not wanted:
            return changed, refused
        modseq = self._next_modseq(session, mailbox_id)
        updates: list[dict[str, object]] = []
        conn = session.connection()
        for start in range(0, len(wanted), _BATCH):
            chunk = wanted[start : start + _BATCH]
            rows = conn.execute(
                select(*META_COLUMNS).where(Message.mailbox_id == mailbox_id, Message.uid.in_(chunk))
            ).all()
            for row in rows:
                meta = meta_row(tuple(row))
                if unchanged_since is not None and meta.modseq > unchanged_since:
                    refused.append(meta.uid)
                    continue
                current = list(meta.flags)
                if mode == "+":
                    new = current + [f for f in given if f not in current]
                elif mode == "-":
                    new = [f for f in current if f not in given]
                else:
                    new = given
                if new == current:
                    continue
                updates.append({"mid": meta.id, "new_flags": " ".join(new), "new_modseq": modseq})
                changed.append(
                    MessageMeta(
                        meta.id,
                        meta.uid,
                        tuple(new),
                        meta.internal_date,
                        meta.size,
                        modseq,
                        meta.blob_id,
                        meta.decrypt_on_read,
                    )
                )
        if updates:
            messages = table(Message)
            conn.execute(
                update(messages)
                .where(messages.c.id == bindparam("mid"))
                .values(flags=bindparam("new_flags"), modseq=bindparam("new_modseq")),
                updates,
            )
            notify_changed(conn, [mailbox_id])
        return changed, sorted(refused)

    def copy(
        self, session: Session, source_id: int, uids: Iterable[int], target_id: int
    ) -> list[tuple[int, int]]:
        """COPY (RFC 3501 §6.4.7): the copies share the bodies (same owner, same key). Returns
        (source UID, new UID) pairs for COPYUID (RFC 4315 §3)."""
        wanted = sorted(set(uids))
        conn = session.connection()
        query = select(Mailbox.uidnext, Mailbox.modseq).where(Mailbox.id == target_id)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        target = conn.execute(query).first()
        if target is None:
            raise MailboxError("no such mailbox", "TRYCREATE")
        uidnext, modseq = int(target[0]), int(target[1]) + 1
        pairs: list[tuple[int, int]] = []
        rows: list[dict[str, object]] = []
        now = utcnow()
        for start in range(0, len(wanted), _BATCH):
            chunk = wanted[start : start + _BATCH]
            found = session.scalars(
                select(Message)
                .where(Message.mailbox_id == source_id, Message.uid.in_(chunk))
                .order_by(Message.uid)
            )
            for m in found:
                pairs.append((m.uid, uidnext))
                rows.append(
                    {
                        "mailbox_id": target_id,
                        "uid": uidnext,
                        "blob_id": m.blob_id,
                        "size": m.size,
                        "internal_date": m.internal_date,
                        "flags": m.flags,
                        "decrypt_on_read": m.decrypt_on_read,
                        "modseq": modseq,
                        "created_at": now,
                    }
                )
                uidnext += 1
        if rows:
            conn.execute(insert(table(Message)), rows)
            conn.execute(
                update(table(Mailbox))
                .where(table(Mailbox).c.id == target_id)
                .values(uidnext=uidnext, modseq=modseq)
            )
            notify_changed(conn, [target_id])
        return pairs

    def expunge(
        self,
        session: Session,
        mailbox_id: int,
        uids: Iterable[int] | None = None,
        *,
        deleted_only: bool = False,
    ) -> list[int]:
        """EXPUNGE (RFC 3501 §6.4.3): every message flagged \\Deleted, or the given UIDs (MOVE);
        with ``deleted_only``, only those of them that are \\Deleted (UID EXPUNGE, RFC 4315
        §2.1). Returns the expunged UIDs, ascending."""
        conn = session.connection()
        query = select(Message.id, Message.uid, Message.blob_id).where(Message.mailbox_id == mailbox_id)
        if uids is None or deleted_only:
            query = query.where(Message.flags.contains("\\Deleted", autoescape=True))
        if uids is None:
            rows = [tuple(r) for r in conn.execute(query.order_by(Message.uid))]
        else:
            wanted = sorted(set(uids))
            rows = []
            for start in range(0, len(wanted), _BATCH):
                chunk = wanted[start : start + _BATCH]
                rows += [
                    tuple(r) for r in conn.execute(query.where(Message.uid.in_(chunk)).order_by(Message.uid))
                ]
        if not rows:
            return []
        modseq = self._next_modseq(session, mailbox_id)
        ids = [int(r[0]) for r in rows]
        gone = [int(r[1]) for r in rows]
        for start in range(0, len(ids), _BATCH):
            conn.execute(delete(table(Message)).where(table(Message).c.id.in_(ids[start : start + _BATCH])))
        conn.execute(
            insert(table(ExpungedMessage)),
            [
                {"mailbox_id": mailbox_id, "uid": uid, "modseq": modseq, "created_at": utcnow()}
                for uid in gone
            ],
        )
        notify_changed(conn, [mailbox_id])
        self._drop_orphans(session, [int(r[2]) for r in rows])
        return gone

    def _drop_orphans(self, session: Session, blob_ids: Iterable[int]) -> list[int]:
        """Delete the bodies no message refers to any more (copies share bodies)."""
        candidates = sorted(set(blob_ids))
        dropped: list[int] = []
        for start in range(0, len(candidates), _BATCH):
            chunk = candidates[start : start + _BATCH]
            still = set(session.scalars(select(Message.blob_id).where(Message.blob_id.in_(chunk)).distinct()))
            for blob_id in chunk:
                if blob_id not in still:
                    self.blobs.delete(session, blob_id)
                    dropped.append(blob_id)
        return dropped


__all__ = [
    "SEPARATOR",
    "Changes",
    "MailboxError",
    "MailboxInfo",
    "MailboxStore",
    "MessageMeta",
    "check_name",
    "normalize_name",
]
