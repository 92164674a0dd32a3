"""The query that finds where a group of messages goes (``Delivery._target_boxes``): the right
mailboxes, found through indexes (it runs for every group of messages delivered)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from deliveries import make_delivery
from sqlalchemy.dialects import sqlite

from mailserver.delivery import _TARGET_BOXES, Delivery
from mailserver.store import DatabaseBlobStore, MailStore
from openmss.db.engine import Database
from openmss.db.migrate import upgrade

from servers import pg_database_url

ACCOUNTS = 50


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = await pg_database_url("targets") or f"sqlite+aiosqlite:///{tmp_path / 't.sqlite3'}"
    database = Database(url)
    await upgrade(database)
    yield database
    await database.dispose()


@pytest.fixture
def accounts(db: Database) -> dict[str, int]:
    store = MailStore(DatabaseBlobStore())
    with db.sync_transaction() as session:
        return {
            f"user{i}@x.test": store.create_account(session, f"user{i}@x.test", "not-a-hash", f"User {i}").id
            for i in range(ACCOUNTS)
        }


def _delivery(db: Database) -> Delivery:
    return make_delivery(db, "x.test")


async def test_recipients_inboxes_and_senders_sent_boxes(db: Database, accounts: dict[str, int]) -> None:
    sender = accounts["user9@x.test"]
    with db.sync_transaction() as session:
        targets = _delivery(db)._target_boxes(session, {"user3@x.test", "user7@x.test"}, {sender})
    assert {address: account for address, (_, account) in targets.inboxes.items()} == {
        "user3@x.test": accounts["user3@x.test"],
        "user7@x.test": accounts["user7@x.test"],
    }
    assert set(targets.sent) == {sender}
    # Exactly those three mailboxes, none of the other accounts' (nor the sender's INBOX).
    assert len(targets.boxes) == 3 and targets.sent[sender] not in [b for b, _ in targets.inboxes.values()]


async def test_no_mailbox_or_account_is_scanned(db: Database, accounts: dict[str, int]) -> None:
    if not db.is_sqlite:
        pytest.skip("the plan checked here is SQLite's (PostgreSQL plans small tables as it likes)")
    sql = str(
        _TARGET_BOXES.params(
            addresses=["user3@x.test", "user7@x.test"], senders=[accounts["user9@x.test"]]
        ).compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
    )
    with db.sync_engine().connect() as conn:
        plan = [str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)]
    assert plan, "no plan"
    scans = [step for step in plan if step.startswith("SCAN")]
    assert not scans, plan
