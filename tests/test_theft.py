"""Theft test: with the database files, the data folder and the logs in hand, a thief reads no
subject, no body and no attachment.

Messages carrying a known marker in the subject, the body and an attachment are delivered
locally (INBOX and Sent), queued for a peer that is down, and bounced back as a DSN; one is
read through the account API (decryption happens in memory), one found by an IMAP header search
and one appended over IMAP (both leave sealed header index entries). Then the server stops and every
byte of the SQLite files (WAL included) or of a pg_dump, of the data folder and of the logs is
searched for the marker.
"""

from __future__ import annotations

import asyncio
import base64
import imaplib
import io
import logging
import os
import shutil
import smtplib
import subprocess
from pathlib import Path

import httpx
import pytest

from openmss.logs import JsonFormatter, configure_logging

from peers import pair

MARKER = "VOL-DE-DONNEES-4b1f9e"


def _message(sender: str, recipients: list[str]) -> bytes:
    attachment = f"Compte rendu {MARKER}\r\nRésultats {MARKER}\r\n"
    return (
        f"From: {sender}\r\nTo: {', '.join(recipients)}\r\nSubject: Dossier {MARKER}\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"Bonjour, le diagnostic est {MARKER}.\r\n"
        f'--b1\r\nContent-Type: text/plain; charset=utf-8; name="cr-{MARKER}.txt"\r\n'
        f'Content-Disposition: attachment; filename="cr-{MARKER}.txt"\r\n'
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        f"{attachment}\r\n--b1--\r\n"
    ).encode()


def _send(inst, user: str, recipients: list[str]) -> None:  # type: ignore[no-untyped-def]
    with smtplib.SMTP("127.0.0.1", inst.settings.submission_port, timeout=10) as client:
        client.starttls(context=inst.client_tls())
        client.login(user, inst.passwords[user])
        client.sendmail(user, recipients, _message(user, recipients))


def _imap_search_and_append(inst, user: str) -> None:  # type: ignore[no-untyped-def]
    client = imaplib.IMAP4_SSL("127.0.0.1", inst.settings.imaps_port, ssl_context=inst.client_tls())
    client.login(user, inst.passwords[user])
    client.select("INBOX")
    assert client.uid("SEARCH", "SUBJECT", MARKER)[1] == [b"1"]
    assert client.append("Drafts", None, None, _message(user, [user]))[0] == "OK"
    client.logout()


async def _header_index_rows(inst) -> int:  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select

    from mailserver.store.tables import MessageHeader

    for _ in range(100):  # the session writes its entries as it ends, just after LOGOUT
        async with inst.runtime.db.read() as session:
            count = int(await session.scalar(select(func.count()).select_from(MessageHeader)) or 0)
        if count >= 2:
            break
        await asyncio.sleep(0.05)
    return count


def _read_all(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _needles() -> list[bytes]:
    marker = MARKER.encode()
    found = [marker, marker.lower(), marker.upper()]
    # The marker base64-encoded at any alignment, in case something encoded it on the way.
    for shift in range(3):
        encoded = base64.b64encode(b"x" * shift + marker)[4:-4]
        found.append(encoded)
    return found


def _search(data: bytes, where: str) -> list[str]:
    return [f"{where}: {needle!r}" for needle in _needles() if needle in data]


async def test_a_thief_with_the_database_files_and_logs_reads_nothing(servers, tmp_path):
    configure_logging("DEBUG", "json")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    try:
        a, b = await pair(servers, tmp_path)
        alice = await a.add_account("alice")
        bob = await a.add_account("bob")
        remote = await b.add_account("carol")
        await servers.stop(b)  # the peer is down: the remote copy waits in the queue
        await asyncio.to_thread(_send, a, alice, [bob, remote])
        await asyncio.to_thread(_send, a, bob, [alice])
        [got] = await a.wait_for_messages(bob, 1)
        assert MARKER.encode() in got  # bob reads it (decrypted, in memory)
        async with httpx.AsyncClient(base_url=a.http_base, verify=a.client_tls()) as http:
            reply = await http.get("/api/v1/mailboxes/INBOX/messages/1", auth=(alice, a.passwords[alice]))
            assert reply.status_code == 200 and MARKER.encode() in reply.content
        async with a.runtime.db.read() as session:
            [queued] = await a.runtime.queue_store.list(session)
        assert queued.recipient == remote
        # An IMAP session searches headers and appends a draft: the sealed header index fills.
        await asyncio.to_thread(_imap_search_and_append, a, bob)
        assert await _header_index_rows(a) >= 2
        settings = a.settings
        # A thief may copy the files of a running server: the WAL then holds recent pages.
        hot = await asyncio.to_thread(_read_all, Path(settings.data_dir))
        await servers.stop(a)
    finally:
        logging.getLogger().removeHandler(handler)
        configure_logging("WARNING", "text")

    leaks: list[str] = []
    for path, data in hot.items():
        leaks += _search(data, f"{path} (while running)")
    for path, data in (await asyncio.to_thread(_read_all, Path(settings.data_dir))).items():
        leaks += _search(data, str(path))
    if not settings.database_url:
        wal = [p for p in hot if p.name.endswith("-wal")]
        assert wal and max(len(hot[p]) for p in wal) > 0  # the WAL was there, and searched
    if settings.database_url:
        pg_dump = shutil.which("pg_dump")
        if pg_dump is None:
            pytest.skip("pg_dump is not installed")
        url = settings.database_url.replace("postgresql+asyncpg://", "postgresql://")
        dump = await asyncio.to_thread(
            subprocess.run,
            [pg_dump, "--data-only", url],
            capture_output=True,
            check=True,
            env=dict(os.environ),
        )
        assert b"COPY public.messages" in dump.stdout  # the dump holds the mail store
        leaks += _search(dump.stdout, "pg_dump")
    logs = stream.getvalue().encode()
    assert b"message accepted" in logs  # the logs saw the deliveries...
    leaks += _search(logs, "logs")  # ...and nothing of their content
    assert leaks == []
