"""The link between a directory mailbox and the local account that receives its mail.

A mailbox of the national directory whose address is one of our accounts is ours: the account
holder is that professional (or that service). The link is made in both orders — by the import
for accounts that already exist, and when an account is created for an address the directory
already lists — and is what keeps our own mailboxes when a later file drops them
(``directory.importer``).
"""

from __future__ import annotations

from sqlalchemy import Connection, exists, select, update

from directory.tables import DirectoryMailbox
from mailserver.store.tables import Account
from openmss.db.base import table


def link_accounts(conn: Connection, address: str | None = None) -> int:
    """Link every unlinked directory mailbox (or only ``address``'s) to the local account of the
    same address; returns how many were linked."""
    mailboxes, accounts = table(DirectoryMailbox), table(Account)
    same_address = accounts.c.address == mailboxes.c.address
    statement = (
        update(mailboxes)
        .where(mailboxes.c.account_id.is_(None), exists().where(same_address))
        .values(account_id=select(accounts.c.id).where(same_address).scalar_subquery())
    )
    if address is not None:
        statement = statement.where(mailboxes.c.address == address.strip().lower())
    return int(conn.execute(statement).rowcount or 0)
