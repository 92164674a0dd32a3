"""Operations of the mail store, each inside a caller's transaction."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from mailserver.store.blobs import BlobStore
from mailserver.store.notify import notify_changed
from mailserver.store.tables import Account, Mailbox, Message
from openmss.db.base import table, utcnow
from openmss.db.driver import DriverStatement

# (name, RFC 6154 special-use attribute)
DEFAULT_MAILBOXES: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)


class NoSuchMailbox(LookupError):
    pass


@dataclass(frozen=True)
class NewMessage:
    """A message to file into a mailbox; its body is an already stored blob."""

    mailbox_id: int
    blob_id: int
    size: int
    internal_date: datetime
    flags: tuple[str, ...] = ()
    decrypt_on_read: bool = False


@dataclass(frozen=True)
class FiledMessage:
    """Where a message was just filed: its mailbox and UID."""

    mailbox_id: int
    uid: int
    blob_id: int
    size: int


@dataclass(frozen=True)
class StoredMessage:
    id: int
    mailbox_id: int
    uid: int
    blob_id: int
    size: int
    internal_date: datetime
    flags: tuple[str, ...]
    decrypt_on_read: bool = False


# Statements built once: building SQLAlchemy expressions costs more than running them.
_SELECT_UIDNEXT = (
    select(Mailbox.id, Mailbox.uidnext, Mailbox.modseq)
    .where(Mailbox.id.in_(bindparam("ids", expanding=True)))
    .order_by(Mailbox.id)
)
_SELECT_UIDNEXT_FOR_UPDATE = _SELECT_UIDNEXT.with_for_update()
# Run by the driver (openmss.db.driver): they are on every delivery.
_UPDATE_UIDNEXT = DriverStatement(
    update(table(Mailbox))
    .where(table(Mailbox).c.id == bindparam("box"))
    .values(uidnext=bindparam("next_uid"), modseq=bindparam("new_modseq")),
    ("box", "next_uid", "new_modseq"),
)
_MESSAGE_COLUMNS = (
    *("mailbox_id", "uid", "blob_id", "size", "internal_date"),
    *("flags", "decrypt_on_read", "modseq", "created_at"),
)
_INSERT_MESSAGE = DriverStatement(insert(table(Message)).inline(), _MESSAGE_COLUMNS)


def new_uidvalidity() -> int:
    # RFC 3501 §2.3.1.1: a 32-bit value that must change if UIDs are ever reused; the
    # creation time in seconds is the usual choice.
    return int(time.time()) & 0x7FFFFFFF or 1


class MailStore:
    """Writes are synchronous (the writer thread, or the CLI); reads are async (the event loop)."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    # Accounts -------------------------------------------------------------------------------

    def create_account(
        self, session: Session, address: str, password_hash: str, display_name: str = ""
    ) -> Account:
        account = Account(address=address.lower(), password_hash=password_hash, display_name=display_name)
        session.add(account)
        session.flush()
        for name, special in DEFAULT_MAILBOXES:
            session.add(
                Mailbox(account_id=account.id, name=name, special_use=special, uidvalidity=new_uidvalidity())
            )
        session.flush()
        return account

    async def account_by_address(self, session: AsyncSession, address: str) -> Account | None:
        result = await session.scalars(select(Account).where(Account.address == address.lower()))
        return result.first()

    async def mailbox(self, session: AsyncSession, account_id: int, name: str) -> Mailbox:
        if name.upper() == "INBOX":
            name = "INBOX"
        result = await session.scalars(
            select(Mailbox).where(Mailbox.account_id == account_id, Mailbox.name == name)
        )
        box = result.first()
        if box is None:
            raise NoSuchMailbox(name)
        return box

    async def special_mailbox(self, session: AsyncSession, account_id: int, special_use: str) -> Mailbox:
        result = await session.scalars(
            select(Mailbox).where(Mailbox.account_id == account_id, Mailbox.special_use == special_use)
        )
        box = result.first()
        if box is None:
            raise NoSuchMailbox(special_use)
        return box

    # Messages -------------------------------------------------------------------------------

    def append(
        self,
        session: Session,
        mailbox: Mailbox,
        chunks: Iterable[bytes | memoryview],
        *,
        size: int,
        flags: Sequence[str] = (),
        internal_date: datetime | None = None,
    ) -> FiledMessage:
        """Store a message in ``mailbox`` and give it the next UID (RFC 3501 §2.3.1.1)."""
        [blob_id] = self.blobs.put_many(session, [list(chunks)])
        [stored] = self.file_many(
            session, [NewMessage(mailbox.id, blob_id, size, internal_date or utcnow(), tuple(flags))]
        )
        return stored

    def file_many(
        self,
        session: Session,
        items: Sequence[NewMessage],
        *,
        boxes: dict[int, tuple[int, int]] | None = None,
    ) -> list[FiledMessage]:
        """File messages whose bodies are stored, giving each the next UID of its mailbox.

        A constant number of statements whatever the number of messages: the mailboxes' UIDNEXT
        and MODSEQ are read (locked, on PostgreSQL, in id order so that instances never
        deadlock), advanced once each, and the messages inserted together. UIDs stay strictly
        ascending in each mailbox (RFC 3501 §2.3.1.1) because the write transaction holds those
        rows; every message filed takes its mailbox's next mod-sequence (RFC 7162 §3.1.1).
        ``boxes`` ({mailbox id: (uidnext, modseq)}) may be given by a caller that has already
        read and locked those rows. Sessions watching the mailboxes are told after the commit.
        """
        if not items:
            return []
        conn = session.connection()  # Core: the ORM's unit of work is not needed here
        box_ids = sorted({i.mailbox_id for i in items})
        if boxes is None:
            query = _SELECT_UIDNEXT_FOR_UPDATE if conn.dialect.name == "postgresql" else _SELECT_UIDNEXT
            rows = conn.execute(query, {"ids": box_ids})
            boxes = {int(box): (int(nxt), int(mod)) for box, nxt, mod in rows}
        uidnext = {box: boxes[box][0] for box in box_ids}
        modseq = {box: boxes[box][1] + 1 for box in box_ids}
        filed: list[FiledMessage] = []
        for item in items:
            filed.append(FiledMessage(item.mailbox_id, uidnext[item.mailbox_id], item.blob_id, item.size))
            uidnext[item.mailbox_id] += 1
        _UPDATE_UIDNEXT.executemany(conn, [(box, nxt, modseq[box]) for box, nxt in uidnext.items()])
        now = utcnow()
        _INSERT_MESSAGE.executemany(
            conn,
            [
                (
                    item.mailbox_id,
                    f.uid,
                    item.blob_id,
                    item.size,
                    item.internal_date,
                    " ".join(item.flags),
                    item.decrypt_on_read,
                    modseq[item.mailbox_id],
                    now,
                )
                for item, f in zip(items, filed, strict=True)
            ],
        )
        notify_changed(conn, box_ids)
        return filed

    async def messages(self, session: AsyncSession, mailbox_id: int) -> list[StoredMessage]:
        result = await session.scalars(
            select(Message).where(Message.mailbox_id == mailbox_id).order_by(Message.uid)
        )
        return [_stored(m) for m in result]

    async def message_by_uid(self, session: AsyncSession, mailbox_id: int, uid: int) -> StoredMessage | None:
        result = await session.scalars(
            select(Message).where(Message.mailbox_id == mailbox_id, Message.uid == uid)
        )
        found = result.first()
        return _stored(found) if found else None

    def body(self, session: AsyncSession, message: StoredMessage) -> AsyncIterator[bytes]:
        return self.blobs.get(session, message.blob_id)

    async def read(self, session: AsyncSession, message: StoredMessage) -> bytes:
        return b"".join([chunk async for chunk in self.body(session, message)])


def _stored(m: Message) -> StoredMessage:
    return StoredMessage(
        id=m.id,
        mailbox_id=m.mailbox_id,
        uid=m.uid,
        blob_id=m.blob_id,
        size=m.size,
        internal_date=m.internal_date,
        flags=tuple(m.flags.split()) if m.flags else (),
        decrypt_on_read=m.decrypt_on_read,
    )
