"""The conversations table (directory/conversations.py) on the migrated schema, SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from directory.conversations import Conversation, MessagingPolicy
from directory.policy import AddressKinds, ConversationUpdate, default_patient_domains
from openmss.db.engine import Database
from openmss.db.migrate import upgrade

from servers import pg_database_url

DOCTOR = "dr.martin@a.test"
SECRETARIAT = "secretariat@a.test"
PATIENT = "146026322000196@patient.a.test"
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = await pg_database_url("conversations") or f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite3'}"
    database = Database(url)
    await upgrade(database)
    try:
        yield database
    finally:
        await database.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _policy(db: Database, clock: Clock) -> MessagingPolicy:
    async def write(work: Callable[[Session], Any]) -> Any:
        def run() -> Any:
            with db.sync_transaction() as session:
                return work(session)

        return await asyncio.to_thread(run)

    return MessagingPolicy(db, write, AddressKinds(default_patient_domains(["a.test"])), clock=clock)


async def _row(db: Database) -> Conversation:
    async with db.read() as session:
        [row] = (await session.scalars(select(Conversation))).all()
        return row


async def test_open_close_reopen(db):
    clock = Clock()
    policy = _policy(db, clock)
    opening = [ConversationUpdate(DOCTOR, PATIENT, SECRETARIAT, closes=False)]
    await policy.after_delivery(opening)
    await policy.before_delivery(opening)  # nothing: only closing messages are written before
    row = await _row(db)
    assert (row.opened_at, row.last_message_at, row.closed_at, row.reply_to) == (T0, T0, None, SECRETARIAT)

    # A later message without Reply-To keeps the address the patient may be answering.
    clock.now = T0 + timedelta(hours=1)
    await policy.after_delivery([ConversationUpdate(DOCTOR, PATIENT, None, closes=False)])
    row = await _row(db)
    assert (row.opened_at, row.last_message_at, row.reply_to) == (T0, clock.now, SECRETARIAT)

    clock.now = T0 + timedelta(hours=2)
    closing = [ConversationUpdate(DOCTOR, PATIENT, None, closes=True)]
    await policy.after_delivery(closing)  # nothing: closing messages are written before
    assert (await _row(db)).closed_at is None
    await policy.before_delivery(closing)
    row = await _row(db)
    assert row.closed_at == clock.now and row.reply_to == SECRETARIAT and row.opened_at == T0
    assert [s.closed for s in await policy.conversations_of(PATIENT.upper())] == [True]

    # Reopened: a new conversation, with the new message's Reply-To only.
    clock.now = T0 + timedelta(days=1)
    await policy.after_delivery([ConversationUpdate(DOCTOR, PATIENT, None, closes=False)])
    row = await _row(db)
    assert (row.opened_at, row.closed_at, row.reply_to) == (clock.now, None, None)
    assert await policy.refusal(PATIENT, DOCTOR) is None
    refusal = await policy.refusal(PATIENT, SECRETARIAT)
    assert refusal is not None and refusal.reason == "patient-not-invited"


async def test_a_failed_write_after_delivery_is_logged_not_raised(db, caplog):
    async def broken(work: Callable[[Session], Any]) -> Any:
        raise RuntimeError("database away")

    policy = MessagingPolicy(db, broken, AddressKinds(frozenset()))
    update = ConversationUpdate(DOCTOR, PATIENT, None, closes=False)
    await policy.after_delivery([update])
    assert "conversation not recorded" in caplog.text
    with pytest.raises(RuntimeError):  # before delivery: the message gets a 4xx instead
        await policy.before_delivery([ConversationUpdate(DOCTOR, PATIENT, None, closes=True)])


def test_plan_reads_the_professionals_headers():
    kinds = AddressKinds(default_patient_domains(["a.test"]))
    policy = MessagingPolicy(None, None, kinds)  # type: ignore[arg-type]
    message = (
        f"From: {DOCTOR}\r\nSubject: =?utf-8?q?[FIN]?=\r\nReply-To: Accueil <{SECRETARIAT}>\r\n\r\n[FIN]\r\n"
    ).encode()
    assert policy.plan(DOCTOR, [PATIENT, SECRETARIAT], message) == [
        ConversationUpdate(DOCTOR, PATIENT, SECRETARIAT, closes=True)
    ]
    assert policy.plan(DOCTOR, [SECRETARIAT], message) == []
    assert policy.plan(PATIENT, [DOCTOR], message) == []
    body_only = f"From: {DOCTOR}\r\nSubject: suivi\r\n\r\nX-MSS-MES: FIN\r\n".encode()
    assert policy.plan(DOCTOR, [PATIENT], body_only) == [
        ConversationUpdate(DOCTOR, PATIENT, None, closes=False)
    ]
