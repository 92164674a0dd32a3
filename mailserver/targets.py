"""Where a group of messages goes: one query for the recipients' INBOXes and the senders' Sent
mailboxes, with their UIDNEXT/MODSEQ and their owners' current keys.

It runs once per group of messages delivered, so it goes through the driver (see
``openmss.db.driver``): SQLAlchemy's expanding ``IN`` parameters are rendered again at every
execution, which cost more than the query itself. The text is written once per dialect and per
list length (cached). The mailboxes are chosen by id through two indexed lookups (the
recipients' INBOXes by address, the senders' Sent mailboxes by account): one WHERE with an OR
across the two tables made SQLite scan every mailbox of the server. On PostgreSQL the rows are
locked (FOR UPDATE, in id order, so that two instances never deadlock) until the transaction
ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from sqlalchemy import Connection

from mailserver.encryption import OwnerKey

_QUERY = """\
SELECT accounts.address, mailboxes.account_id, mailboxes.id, mailboxes.name, mailboxes.special_use,
       mailboxes.uidnext, mailboxes.modseq, account_keys.fingerprint, account_keys.public, account_keys.mode
FROM mailboxes
JOIN accounts ON accounts.id = mailboxes.account_id
LEFT OUTER JOIN account_keys ON account_keys.account_id = mailboxes.account_id AND account_keys.current = {p}
WHERE mailboxes.id IN (
    SELECT mailboxes.id FROM mailboxes JOIN accounts ON accounts.id = mailboxes.account_id
    WHERE accounts.address IN ({addresses}) AND accounts.disabled = {p} AND mailboxes.name = {p}
    UNION ALL
    SELECT mailboxes.id FROM mailboxes
    WHERE mailboxes.account_id IN ({senders}) AND mailboxes.special_use = {p}
)
ORDER BY mailboxes.id{lock}"""

_PLACEHOLDER = {"sqlite": "?", "postgresql": "%s"}


@lru_cache(maxsize=256)
def target_query(dialect: str, addresses: int, senders: int) -> str:
    """The query's text for ``dialect`` and that many addresses and sender ids; its parameters
    are ``target_parameters``'s."""
    p = _PLACEHOLDER[dialect]
    return _QUERY.format(
        p=p,
        addresses=", ".join([p] * addresses) or "NULL",
        senders=", ".join([p] * senders) or "NULL",
        lock=" FOR UPDATE OF mailboxes" if dialect == "postgresql" else "",
    )


def target_parameters(addresses: list[str], senders: list[int]) -> tuple[object, ...]:
    return (True, *addresses, False, "INBOX", *senders, "\\Sent")


@dataclass
class Targets:
    inboxes: dict[str, tuple[int, int]] = field(default_factory=dict)  # address -> (box, account)
    sent: dict[int, int] = field(default_factory=dict)  # account -> Sent box
    boxes: dict[int, tuple[int, int]] = field(default_factory=dict)  # box -> (uidnext, modseq)
    keys: dict[int, OwnerKey] = field(default_factory=dict)  # account -> current key


def find_targets(conn: Connection, addresses: set[str], sender_ids: set[int]) -> Targets:
    """The INBOXes of ``addresses`` (lower case; disabled accounts have none) and the Sent
    mailboxes of ``sender_ids``, in the caller's transaction."""
    targets = Targets()
    if not addresses and not sender_ids:
        return targets
    ordered_addresses, ordered_senders = sorted(addresses), sorted(sender_ids)
    sql = target_query(conn.dialect.name, len(ordered_addresses), len(ordered_senders))
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, target_parameters(ordered_addresses, ordered_senders))
        rows = cursor.fetchall()
    finally:
        cursor.close()
    for address, account_id, box_id, name, special_use, next_uid, modseq, fpr, public, mode in rows:
        targets.boxes[int(box_id)] = (int(next_uid), int(modseq))
        if fpr is not None:
            targets.keys[int(account_id)] = OwnerKey(str(fpr), bytes(public), str(mode))
        if name == "INBOX" and address in addresses:
            targets.inboxes[str(address)] = (int(box_id), int(account_id))
        if special_use == "\\Sent" and account_id in sender_ids:
            targets.sent[int(account_id)] = int(box_id)
    return targets
