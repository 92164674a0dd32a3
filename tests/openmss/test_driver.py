"""Statements run through the driver (``openmss.db.driver``): rows stored exactly as SQLAlchemy
stores them, inside the caller's transaction and SAVEPOINT, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from mailserver.store import DatabaseBlobStore, MailStore
from mailserver.store.tables import Blob, Mailbox, Message
from openmss.db.base import table
from openmss.db.driver import DriverSelect, DriverStatement
from openmss.db.engine import Database

COLUMNS = (
    "mailbox_id",
    "uid",
    "blob_id",
    "size",
    "internal_date",
    "flags",
    "decrypt_on_read",
    "modseq",
    "created_at",
)
INSERT_MESSAGE = DriverStatement(insert(table(Message)).inline(), COLUMNS)
# A date west of UTC: stored as UTC, read back as the same instant.
WHEN = datetime(2026, 11, 24, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=-5)))


@pytest.fixture
def box(db: Database) -> tuple[int, int]:
    """A mailbox and a blob its messages point at."""
    store = MailStore(DatabaseBlobStore())
    with db.sync_transaction() as session:
        account = store.create_account(session, "d@x.test", "not-a-hash", "D")
        inbox = session.scalar(
            select(Mailbox.id).where(Mailbox.account_id == account.id, Mailbox.name == "INBOX")
        )
        [blob] = store.blobs.put_many(session, [[b"body"]])
    assert inbox is not None
    return inbox, blob


def _row(mailbox: int, blob: int, uid: int) -> tuple[object, ...]:
    return (mailbox, uid, blob, 4, WHEN, "\\Seen", True, 7, WHEN)


def _stored(db: Database, uid: int) -> tuple[object, ...]:
    with db.sync_engine().connect() as conn:
        # The raw column values, as the database holds them (no SQLAlchemy result processing).
        return tuple(
            conn.exec_driver_sql(
                "SELECT internal_date, flags, decrypt_on_read, modseq, created_at FROM messages WHERE uid = "
                + str(uid)
            ).one()
        )


async def test_rows_are_stored_as_sqlalchemy_stores_them(db: Database, box: tuple[int, int]) -> None:
    mailbox, blob = box
    with db.sync_transaction() as session:
        INSERT_MESSAGE.executemany(session.connection(), [_row(mailbox, blob, 1), _row(mailbox, blob, 2)])
        session.execute(insert(table(Message)), [dict(zip(COLUMNS, _row(mailbox, blob, 3), strict=True))])
    assert _stored(db, 1) == _stored(db, 3) == _stored(db, 2)
    with db.sync_transaction() as session:
        stored = session.scalars(select(Message).where(Message.uid == 1)).one()
        assert (stored.internal_date, stored.decrypt_on_read, stored.flags) == (WHEN, True, "\\Seen")
        assert stored.internal_date.tzinfo is UTC


async def test_inside_the_callers_transaction_and_savepoint(db: Database, box: tuple[int, int]) -> None:
    mailbox, blob = box
    with db.sync_transaction() as session:
        INSERT_MESSAGE.executemany(session.connection(), [_row(mailbox, blob, 10)])
        with pytest.raises(Exception), session.begin_nested():  # noqa: B017 - the driver's own error
            INSERT_MESSAGE.executemany(
                session.connection(), [_row(mailbox, blob, 11), _row(mailbox, blob, 10)]
            )
        update_box = DriverStatement(
            update(table(Mailbox))
            .where(table(Mailbox).c.id == bindparam("box"))
            .values(uidnext=bindparam("n")),
            ("box", "n"),
        )
        update_box.executemany(session.connection(), [(mailbox, 99)])
    with db.sync_transaction() as session:
        uids = session.scalars(select(Message.uid).where(Message.mailbox_id == mailbox)).all()
        assert sorted(uids) == [10]  # 11 went with the SAVEPOINT that failed on the duplicate 10
        assert session.scalar(select(Mailbox.uidnext).where(Mailbox.id == mailbox)) == 99
    with pytest.raises(Exception), db.sync_transaction() as session:  # noqa: B017
        INSERT_MESSAGE.executemany(session.connection(), [_row(mailbox, blob, 12)])
        raise RuntimeError("the caller's transaction fails")
    with db.sync_transaction() as session:
        assert session.scalar(select(Message.uid).where(Message.uid == 12)) is None


async def test_statements_that_cannot_run_this_way_are_refused(db: Database, box: tuple[int, int]) -> None:
    mailbox, blob = box
    with db.sync_transaction() as session:
        INSERT_MESSAGE.executemany(session.connection(), [])  # nothing to do: no error
        missing = DriverStatement(insert(table(Message)).inline(), (*COLUMNS[:-1], "when"))
        with pytest.raises(ValueError, match="not among the row's keys"):
            missing.executemany(session.connection(), [_row(mailbox, blob, 20)])
        returning = DriverStatement(
            insert(table(Blob)).returning(table(Blob).c.id), ("id", "size", "chunk_count", "created_at")
        )
        with pytest.raises(ValueError, match="returns nothing"):
            returning.executemany(session.connection(), [(1, 1, 1, WHEN)])


async def test_a_driver_select_reads_as_sqlalchemy_reads(db: Database, box: tuple[int, int]) -> None:
    """The same rows, with the same Python types (a UTC-aware datetime, a boolean), whether
    the driver runs the query (SQLite's inline reads) or SQLAlchemy does (PostgreSQL)."""
    mailbox, blob = box
    with db.sync_transaction() as session:
        INSERT_MESSAGE.executemany(session.connection(), [_row(mailbox, blob, 1), _row(mailbox, blob, 2)])
    messages = table(Message)
    statement = (
        select(messages.c.uid, messages.c.internal_date, messages.c.decrypt_on_read, Mailbox.name)
        .join(Mailbox, Mailbox.id == messages.c.mailbox_id)
        .where(messages.c.mailbox_id == bindparam("box"), Mailbox.name == "INBOX")  # a fixed value too
        .order_by(messages.c.uid)
    )
    query = DriverSelect(statement)
    async with db.reads() as reads:
        fast = await reads.rows(query, {"box": mailbox})
        plain = [tuple(row) for row in await reads.rows(statement, {"box": mailbox})]
    assert fast == plain == [(1, WHEN, True, "INBOX"), (2, WHEN, True, "INBOX")]
    assert fast[0][1].tzinfo is UTC
    with pytest.raises(ValueError, match="expanding"):
        DriverSelect(
            select(messages.c.uid).where(messages.c.uid.in_(bindparam("uids", expanding=True)))
        ).query(db.sync_engine().dialect)


async def test_driver_selects_of_one_read_block_share_its_snapshot(
    db: Database, box: tuple[int, int]
) -> None:
    if not db.is_sqlite:
        pytest.skip("SQLite's inline reads run a DriverSelect through the driver")
    mailbox, blob = box
    query = DriverSelect(select(Message.uid).where(Message.mailbox_id == bindparam("box")))
    async with db.reads() as reads:
        before = await reads.rows(query, {"box": mailbox})
        with db.sync_transaction() as session:  # committed meanwhile
            INSERT_MESSAGE.executemany(session.connection(), [_row(mailbox, blob, 30)])
        assert await reads.rows(query, {"box": mailbox}) == before == []
    async with db.reads() as reads:
        assert await reads.rows(query, {"box": mailbox}) == [(30,)]


async def test_core_statements_and_driver_selects_of_one_read_block_share_its_snapshot(
    db: Database, box: tuple[int, int]
) -> None:
    """A read block mixes ``DriverSelect``s (straight to the driver on SQLite) and other Core
    statements (through SQLAlchemy): both read the snapshot the block began with, whichever
    comes first."""
    if not db.is_sqlite:
        pytest.skip("PostgreSQL's read blocks are READ COMMITTED")
    mailbox, blob = box
    fast = DriverSelect(select(Message.uid).where(Message.mailbox_id == bindparam("box")))
    plain = select(Message.uid).where(Message.mailbox_id == bindparam("box"))
    count = select(func.count()).select_from(Message).where(Message.mailbox_id == bindparam("box"))
    for first, uid in ((plain, 40), (fast, 41)):
        async with db.reads() as reads:
            before = [tuple(row) for row in await reads.rows(first, {"box": mailbox})]
            with db.sync_transaction() as session:  # committed meanwhile
                INSERT_MESSAGE.executemany(session.connection(), [_row(mailbox, blob, uid)])
            assert [tuple(row) for row in await reads.rows(fast, {"box": mailbox})] == before
            assert [tuple(row) for row in await reads.rows(plain, {"box": mailbox})] == before
            assert await reads.scalar(count, {"box": mailbox}) == len(before)
    async with db.reads() as reads:
        assert await reads.rows(fast, {"box": mailbox}) == [(40,), (41,)]


async def test_a_read_block_that_fails_leaves_the_next_one_unharmed(
    db: Database, box: tuple[int, int]
) -> None:
    mailbox, blob = box
    fast = DriverSelect(select(Message.uid).where(Message.mailbox_id == bindparam("box")))
    with pytest.raises(DBAPIError):
        async with db.reads() as reads:
            await reads.rows(fast, {"box": mailbox})
            await reads.rows(text("SELECT no_such_column FROM messages"))
    with db.sync_transaction() as session:
        INSERT_MESSAGE.executemany(session.connection(), [_row(mailbox, blob, 50)])
    for _ in range(3):  # whichever pooled connection serves it, it sees the commit
        async with db.reads() as reads:
            assert await reads.rows(fast, {"box": mailbox}) == [(50,)]
