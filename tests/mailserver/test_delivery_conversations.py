"""The messaging policy's state is written in the delivery transaction of the message that
changes it: a professional's message to a patient is stored and opens the conversation
together, or neither happens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from deliveries import make_delivery
from sqlalchemy import select

from directory.conversations import Conversation, record
from directory.policy import ConversationUpdate
from mailserver.delivery import AcceptedMessage, Delivery, DeliveryError, DeliveryReport, RecordConversations
from mailserver.encryption import AtRest
from mailserver.queue.store import RecipientSpec
from mailserver.store import DatabaseBlobStore, MailStore
from mailserver.store.tables import Message
from openmss.db.commit import run_groups
from openmss.db.engine import Database
from openmss.db.migrate import upgrade

from servers import pg_database_url

DOCTOR = "dr.martin@pro.test"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
BODY = b"From: dr.martin@pro.test\r\nSubject: resultats\r\n\r\nBonjour\r\n"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = await pg_database_url("delivconv") or f"sqlite+aiosqlite:///{tmp_path / 'd.sqlite3'}"
    database = Database(url)
    await upgrade(database)
    store = MailStore(DatabaseBlobStore())
    with database.sync_transaction() as session:
        store.create_account(session, "patient1@x.test", "not-a-hash", "Patient 1")
    yield database
    await database.dispose()


def _delivery(db: Database, recorder: RecordConversations | None = record) -> Delivery:
    return make_delivery(db, "x.test", at_rest=AtRest(enabled=False), record_conversations=recorder)


def _message(recipient: str, queue_id: str) -> AcceptedMessage:
    return AcceptedMessage(
        mail_from=DOCTOR,
        recipients=[RecipientSpec(recipient)],
        chunks=[BODY],
        size=len(BODY),
        queue_id=queue_id,
        received_at=NOW,
        conversations=[ConversationUpdate(DOCTOR, recipient, None, closes=False)],
    )


async def _conversations(db: Database) -> list[str]:
    async with db.read() as session:
        return sorted(c.patient for c in await session.scalars(select(Conversation)))


async def test_stored_and_opened_together_or_neither(db: Database) -> None:
    delivery = _delivery(db)
    good = _message("patient1@x.test", "Q1")
    # The account of the second recipient is gone (say, removed after RCPT TO was answered).
    bad = _message("patient2@x.test", "Q2")
    [outcomes] = run_groups(db, [(delivery.deliver_many, [good, bad])])
    (good_ok, report), (bad_ok, error) = outcomes
    assert good_ok and isinstance(report, DeliveryReport) and len(report.stored) == 1
    assert not bad_ok and isinstance(error, DeliveryError)
    # Only the stored message opened its conversation, at the time it was accepted.
    assert await _conversations(db) == ["patient1@x.test"]
    async with db.read() as session:
        [row] = (await session.scalars(select(Conversation))).all()
    assert row.opened_at == NOW and row.professional == DOCTOR


async def test_a_delivery_that_cannot_record_refuses_the_message(db: Database) -> None:
    delivery = _delivery(db, recorder=None)
    [[(ok, error)]] = run_groups(db, [(delivery.deliver_many, [_message("patient1@x.test", "Q3")])])
    assert not ok and isinstance(error, DeliveryError)
    async with db.read() as session:
        assert (await session.scalars(select(Message))).all() == []
    assert await _conversations(db) == []
