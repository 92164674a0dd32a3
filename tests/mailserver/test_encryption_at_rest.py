"""Encryption at rest, through the real interfaces: SMTP in, the database and GnuPG out."""

from __future__ import annotations

import asyncio
import email
import email.policy
import smtplib

import httpx
import pytest
from gnupg import GnuPG
from sqlalchemy import select

from mailserver.message import pgpmime
from mailserver.queue.tables import QueuedMessage
from mailserver.store.blobs import BlobNotFound, DatabaseBlobStore

from peers import pair, queue_empties, submit

MARKER = b"SECRET-MEDICAL-5c2e"


def _send(inst, user: str, recipients: list[str], message: bytes) -> None:  # type: ignore[no-untyped-def]
    with smtplib.SMTP("127.0.0.1", inst.settings.submission_port, timeout=10) as client:
        client.starttls(context=inst.client_tls())
        client.login(user, inst.passwords[user])
        client.sendmail(user, recipients, message)


def _plain(sender: str, recipient: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {recipient}\r\nSubject: Bilan ".encode() + MARKER + b"\r\n"
        b"Message-ID: <bilan-1@a.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n"
        b"Resultat: " + MARKER + b"\r\n"
    )


async def test_local_copies_are_encrypted_to_each_owner(server):
    alice = await server.add_account("alice")
    bob = await server.add_account("bob")
    carol = await server.add_account("carol")
    message = _plain(alice, bob)
    await asyncio.to_thread(_send, server, alice, [bob, carol], message)
    [inbox] = await server.wait_for_messages(bob, 1)
    [stored] = await server.stored(bob)
    [sent_stored] = await server.stored(alice, "Sent")
    [carol_stored] = await server.stored(carol)
    for copy in (stored, sent_stored, carol_stored):
        assert MARKER not in copy and pgpmime.is_encrypted(copy)
        assert b"\r\nSubject: ...\r\n" in copy and b"\r\nTo: " + bob.encode() in copy
    # The Sent copy and the first recipient's are one ciphertext to both keys; the other
    # recipient's is to its key alone (it must not learn who else got the message).
    assert stored == sent_stored and carol_stored != stored
    # Read back: exactly what was submitted, after our trace and Autocrypt fields.
    assert inbox.endswith(message) and inbox.startswith(b"Received: ")
    [sent] = await server.messages(alice, "Sent")
    assert sent == inbox and await server.messages(carol) == [inbox]
    carol_keys = (await server.reader(carol))._chain.secrets
    with pytest.raises(pgpmime.PgpMimeError):
        pgpmime.decrypt_message(stored, carol_keys)
    bob_keys = (await server.reader(bob))._chain.secrets
    with pytest.raises(pgpmime.PgpMimeError):
        pgpmime.decrypt_message(carol_stored, bob_keys)
    # The size recorded is the size the owner is served.
    store = server.runtime.store
    async with server.runtime.db.read() as session:
        account = await store.account_by_address(session, bob)
        box = await store.mailbox(session, account.id, "INBOX")
        [row] = await store.messages(session, box.id)
    assert row.size == len(inbox) and row.decrypt_on_read


async def test_dsn_is_encrypted_too(servers, tmp_path):
    a, _b = await pair(servers, tmp_path)
    alice = await a.add_account("alice")
    await asyncio.to_thread(submit, a, alice, ["nobody@b.test"], "Perdu")
    [dsn] = await a.wait_for_messages(alice, 1)
    assert email.message_from_bytes(dsn, policy=email.policy.default).get_content_type() == "multipart/report"
    [stored] = await a.stored(alice)
    assert pgpmime.is_encrypted(stored) and b"Perdu" not in stored and b"nobody@b.test" not in stored


async def test_queued_message_is_sealed_and_deleted_once_delivered(servers, tmp_path):
    a, b = await pair(servers, tmp_path)
    alice = await a.add_account("alice")
    bob = await b.add_account("bob")
    b_settings = b.settings
    await servers.stop(b)
    await asyncio.to_thread(_send, a, alice, [bob], _plain(alice, bob))
    async with a.runtime.db.read() as session:
        [blob_id] = (await session.scalars(select(QueuedMessage.blob_id))).all()
        raw = b"".join([chunk async for chunk in DatabaseBlobStore().get(session, blob_id)])
        readable = b"".join([chunk async for chunk in a.runtime.queue_store.blobs.get(session, blob_id)])
    assert MARKER not in raw  # sealed with the queue key, which is not in the database
    assert MARKER in readable  # the queue worker reads it with the key
    key_file = a.settings.effective_queue_key_file
    assert key_file.stat().st_mode & 0o077 == 0
    b2 = await servers.start(
        "b",
        **{
            k: getattr(b_settings, k)
            for k in ("smtp_port", "peer_ca_file", "trust_list", "routes", "database_url")
        },
    )
    [got] = await b2.wait_for_messages(bob, 1, timeout=15)
    assert got.endswith(_plain(alice, bob))
    assert await queue_empties(a)
    async with a.runtime.db.read() as session:
        assert (await session.scalars(select(QueuedMessage))).all() == []
        with pytest.raises(BlobNotFound):  # the sealed body is gone as soon as it was delivered
            _ = [c async for c in DatabaseBlobStore().get(session, blob_id)]


async def test_gnupg_user_with_own_key(server, tmp_path):
    """A user whose key comes from GnuPG: the server encrypts to it, gpg decrypts what is
    stored; a message gpg encrypted itself is stored as it came, never encrypted twice."""
    gpg = GnuPG(tmp_path / "gnupg")
    alice = await server.add_account("alice")
    bob = await server.add_account("bob")
    public = await asyncio.to_thread(gpg.generate, bob)
    async with httpx.AsyncClient(base_url=server.http_base, verify=server.client_tls()) as http:
        reply = await http.put("/api/v1/account/key", content=public, auth=(bob, server.passwords[bob]))
        assert reply.status_code == 200, reply.text
        assert reply.json()["mode"] == "own"
    # 1. Plain mail to bob is stored encrypted to his GnuPG key, with protected headers.
    message = _plain(alice, bob)
    await asyncio.to_thread(_send, server, alice, [bob], message)
    [stored] = await server.wait_for_messages(bob, 1)  # an own-key copy is served as stored
    assert MARKER not in stored and pgpmime.is_encrypted(stored)
    inner = await asyncio.to_thread(gpg.decrypt, pgpmime.encrypted_payload(stored))
    assert b"Subject: Bilan " + MARKER in inner and b'protected-headers="v1"' in inner
    assert inner.endswith(b"\r\n\r\nResultat: " + MARKER + b"\r\n")
    # 2. PGP/MIME that gpg produced is stored byte for byte as it came.
    ciphertext = await asyncio.to_thread(
        gpg.encrypt, b"Content-Type: text/plain\r\n\r\n" + MARKER + b"\r\n", bob
    )
    pgp_mime = (
        f"From: {alice}\r\nTo: {bob}\r\nSubject: ...\r\nMIME-Version: 1.0\r\n".encode()
        + b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="gpg1"\r\n\r\n'
        + b"--gpg1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
        + b"--gpg1\r\nContent-Type: application/octet-stream\r\n\r\n"
        + ciphertext.replace(b"\n", b"\r\n")
        + b"\r\n--gpg1--\r\n"
    )
    await asyncio.to_thread(_send, server, alice, [bob], pgp_mime)
    [_, second] = await server.wait_for_messages(bob, 2)
    assert second.endswith(pgp_mime)
    assert second.count(b"BEGIN PGP MESSAGE") == 1  # not encrypted a second time
    assert MARKER in await asyncio.to_thread(gpg.decrypt, pgpmime.encrypted_payload(second))


async def test_an_account_without_a_key_gets_nothing_in_clear(server):
    alice = await server.add_account("alice")
    bob = await server.add_account("bob")
    from sqlalchemy import delete

    from mailserver.store.tables import Account
    from openmss.keyring.tables import AccountKey

    def drop_keys(session):  # type: ignore[no-untyped-def]
        bob_id = session.scalar(select(Account.id).where(Account.address == bob))
        session.execute(delete(AccountKey).where(AccountKey.account_id == bob_id))

    await server.runtime.committer.run(drop_keys)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await asyncio.to_thread(_send, server, alice, [bob], _plain(alice, bob))
    assert refused.value.smtp_code == 451 and refused.value.smtp_error.startswith(b"4.3.0")
    assert await server.stored(bob) == [] and await server.stored(alice, "Sent") == []
