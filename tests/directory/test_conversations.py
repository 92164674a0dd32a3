"""The conversations table (directory/conversations.py) on the migrated schema, SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from directory.conversations import Conversation, MessagingPolicy, record
from directory.policy import AddressKinds, ConversationUpdate, default_patient_domains
from openmss.db.engine import Database

DOCTOR = "dr.martin@a.test"
SECRETARIAT = "secretariat@a.test"
PATIENT = "146026322000196@patient.a.test"
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def _policy(db: Database) -> MessagingPolicy:
    return MessagingPolicy(db, AddressKinds(default_patient_domains(["a.test"])))


def _record(db: Database, updates: list[ConversationUpdate], now: datetime) -> None:
    with db.sync_transaction() as session:
        record(session, updates, now)


async def _row(db: Database) -> Conversation:
    async with db.read() as session:
        [row] = (await session.scalars(select(Conversation))).all()
        return row


async def test_open_close_reopen(db):
    policy = _policy(db)
    await asyncio.to_thread(_record, db, [ConversationUpdate(DOCTOR, PATIENT, SECRETARIAT, closes=False)], T0)
    row = await _row(db)
    assert (row.opened_at, row.last_message_at, row.closed_at, row.reply_to) == (T0, T0, None, SECRETARIAT)

    # A later message without Reply-To keeps the address the patient may be answering.
    later = T0 + timedelta(hours=1)
    await asyncio.to_thread(_record, db, [ConversationUpdate(DOCTOR, PATIENT, None, closes=False)], later)
    row = await _row(db)
    assert (row.opened_at, row.last_message_at, row.reply_to) == (T0, later, SECRETARIAT)

    closed = T0 + timedelta(hours=2)
    await asyncio.to_thread(_record, db, [ConversationUpdate(DOCTOR, PATIENT, None, closes=True)], closed)
    row = await _row(db)
    assert row.closed_at == closed and row.reply_to == SECRETARIAT and row.opened_at == T0
    assert [s.closed for s in await policy.conversations_of(PATIENT.upper())] == [True]

    # Reopened: a new conversation, with the new message's Reply-To only.
    reopened = T0 + timedelta(days=1)
    await asyncio.to_thread(_record, db, [ConversationUpdate(DOCTOR, PATIENT, None, closes=False)], reopened)
    row = await _row(db)
    assert (row.opened_at, row.closed_at, row.reply_to) == (reopened, None, None)
    assert await policy.refusal(PATIENT, DOCTOR) is None
    refusal = await policy.refusal(PATIENT, SECRETARIAT)
    assert refusal is not None and refusal.reason == "patient-not-invited"


def test_plan_reads_the_professionals_headers():
    kinds = AddressKinds(default_patient_domains(["a.test"]))
    policy = MessagingPolicy(None, kinds)  # type: ignore[arg-type]
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
