"""The query that finds where a group of messages goes (``mailserver.targets``): the right
mailboxes and keys, found through indexes (it runs for every group of messages delivered)."""

from __future__ import annotations

import pytest
from deliveries import make_delivery
from sqlalchemy import update

from mailserver.delivery import Delivery, DeliveryError
from mailserver.store import DatabaseBlobStore, MailStore
from mailserver.store.tables import Account
from mailserver.targets import find_targets, target_parameters, target_query
from openmss.db.engine import Database
from openmss.keyring.tables import AccountKey

ACCOUNTS = 50


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


async def test_current_keys_and_no_disabled_account(db: Database, accounts: dict[str, int]) -> None:
    """The owners' current keys come with their mailboxes (an older key is not taken); a
    disabled account's INBOX is not found (the delivery then refuses that recipient)."""
    three, seven = accounts["user3@x.test"], accounts["user7@x.test"]
    with db.sync_transaction() as session:
        for fpr, current in (("OLD3", False), ("NEW3", True)):
            session.add(
                AccountKey(
                    account_id=three, fingerprint=fpr, public=fpr.encode(), mode="server", current=current
                )
            )
        session.execute(update(Account).where(Account.id == seven).values(disabled=True))
    with db.sync_transaction() as session:
        targets = find_targets(session.connection(), {"user3@x.test", "user7@x.test", "nobody@x.test"}, set())
    assert set(targets.inboxes) == {"user3@x.test"}
    assert {account: (key.fingerprint, key.public, key.mode) for account, key in targets.keys.items()} == {
        three: ("NEW3", b"NEW3", "server")
    }


async def test_a_sender_without_sent_mailbox_is_an_error(db: Database, accounts: dict[str, int]) -> None:
    with db.sync_transaction() as session, pytest.raises(DeliveryError, match="no Sent mailbox"):
        _delivery(db)._target_boxes(session, {"user3@x.test"}, {10**9})


async def test_no_mailbox_or_account_is_scanned(db: Database, accounts: dict[str, int]) -> None:
    if not db.is_sqlite:
        pytest.skip("the plan checked here is SQLite's (PostgreSQL plans small tables as it likes)")
    sql = target_query("sqlite", 2, 1)
    parameters = target_parameters(["user3@x.test", "user7@x.test"], [accounts["user9@x.test"]])
    with db.sync_engine().connect() as conn:
        plan = [str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, parameters)]
    assert plan, "no plan"
    scans = [step for step in plan if step.startswith("SCAN")]
    assert not scans, plan
