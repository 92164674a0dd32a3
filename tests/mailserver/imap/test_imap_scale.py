"""A 100,000-message mailbox: SELECT, UID FETCH 1:* (FLAGS) and UID SEARCH stream the
mailbox's metadata; they never hold the mailbox (nor its bodies) in memory."""

from __future__ import annotations

import asyncio
import imaplib
import time
import tracemalloc

from sqlalchemy import insert, select, update

from mailserver.encryption import OwnerKey
from mailserver.store.tables import Account, Mailbox, Message
from openmss.db.base import table, utcnow
from openmss.keyring.tables import AccountKey

COUNT = 100_000


async def _fill(server, address: str) -> None:  # type: ignore[no-untyped-def]
    """100,000 rows sharing one body encrypted to the owner's key (filled directly: going through
    SMTP would take minutes and measure something else)."""
    runtime = server.runtime
    async with runtime.db.read() as session:
        account_id = await session.scalar(select(Account.id).where(Account.address == address))
        box_id = await session.scalar(
            select(Mailbox.id).where(Mailbox.account_id == account_id, Mailbox.name == "INBOX")
        )
        fpr, public, mode = (
            await session.execute(
                select(AccountKey.fingerprint, AccountKey.public, AccountKey.mode).where(
                    AccountKey.account_id == account_id, AccountKey.current.is_(True)
                )
            )
        ).one()
    message = b"From: someone@a.test\r\nSubject: Compte rendu\r\n\r\nRAS.\r\n"
    copy = runtime.delivery.at_rest.copies(message, {account_id: OwnerKey(fpr, bytes(public), mode)})[
        account_id
    ]
    now = utcnow()

    def work(session):  # type: ignore[no-untyped-def]
        [blob_id] = runtime.store.blobs.put_many(session, [[copy.body]])
        rows = [
            {
                "mailbox_id": box_id,
                "uid": uid,
                "blob_id": blob_id,
                "size": copy.size,
                "internal_date": now,
                "flags": "\\Seen" if uid % 10 else "\\Flagged",
                "decrypt_on_read": True,
                "modseq": 2,
                "created_at": now,
            }
            for uid in range(1, COUNT + 1)
        ]
        session.execute(insert(table(Message)), rows)
        session.execute(
            update(table(Mailbox)).where(table(Mailbox).c.id == box_id).values(uidnext=COUNT + 1, modseq=2)
        )

    await runtime.committer.run(work)


async def test_a_100000_message_mailbox(server):
    alice = await server.add_account("alice")
    await _fill(server, alice)
    timings: dict[str, float] = {}

    def run() -> None:
        client = imaplib.IMAP4_SSL(
            "127.0.0.1", server.settings.imaps_port, ssl_context=server.client_tls(), timeout=120
        )
        client.login(alice, server.passwords[alice])
        started = time.perf_counter()
        typ, data = client.select("INBOX")
        timings["SELECT"] = time.perf_counter() - started
        assert typ == "OK" and data == [str(COUNT).encode()]
        started = time.perf_counter()
        typ, data = client.uid("FETCH", "1:*", "(FLAGS)")
        timings["UID FETCH 1:* (FLAGS)"] = time.perf_counter() - started
        assert typ == "OK" and len(data) == COUNT
        assert data[-1] == b"100000 (FLAGS (\\Flagged) UID 100000)"
        started = time.perf_counter()
        typ, data = client.uid("SEARCH", "FLAGGED")
        timings["UID SEARCH FLAGGED"] = time.perf_counter() - started
        assert typ == "OK" and len(data[0].split()) == COUNT // 10
        typ, data = client.fetch("99999", "(BODY.PEEK[])")
        assert data[0][1].endswith(b"RAS.\r\n")  # the shared body, decrypted
        client.logout()

    tracemalloc.start()
    try:
        await asyncio.to_thread(run)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The client side alone holds 100,000 response lines (~6 MB in imaplib's lists); the server
    # streams: its share stays far below what a mailbox in memory would take.
    assert peak < 60 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"
    for name, seconds in timings.items():
        print(f"{name}: {seconds:.2f} s")
