"""Crash durability: what got ``250`` survives a SIGKILL of the server, exactly once.

Several client sessions submit messages in a loop while ``openmss serve`` runs as a separate
process; at a random moment the process gets SIGKILL. After a restart on the same data directory
(SQLite) or database (PostgreSQL) every acknowledged message must be in the recipient's INBOX
exactly once. A message in flight at the kill may or may not be there, but never twice, and no
message appears that was never sent. The kill/restart happens twice, then the restarted server
must still accept mail.

Set OPENMSS_CRASH_SEED to replay the kill moments of a failed run.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import smtplib
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailserver.store import DatabaseBlobStore, MailStore
from mailserver.store.reader import MessageReader
from openmss.db.engine import Database
from openmss.keyring.store import Keyring
from openmss.settings import Settings

from processes import ServerProcess, openmss_env, run_cli
from servers import pg_database_url

DOMAIN = "crash.test"
SENDER = f"sender@{DOMAIN}"
RECIPIENT = f"recipient@{DOMAIN}"
PASSWORD = "crash test password"

SESSIONS = 6  # concurrent client threads
# Then QUIT and log in again; session lengths differ between threads so that at any moment most
# threads are sending while some are logging in (argon2 takes ~1 s with six logins on two CPUs).
MESSAGES_PER_SESSION = 15  # + 4 * thread index
KILL_WINDOW = (0.5, 2.5)  # seconds after the first 250 of a round
ROUNDS = 2  # kill/restart cycles
BODY_LINES = 40  # ~2.5 kB per message

MARKER_RE = re.compile(rb"^X-Crash-Marker: (\S+)\r$", re.MULTILINE)


def build_message(marker: str) -> bytes:
    lines = [
        f"From: {SENDER}",
        f"To: {RECIPIENT}",
        f"Subject: crash test {marker}",
        f"X-Crash-Marker: {marker}",
        "",
        *(f"{marker} line {i:03d} of the body, filler filler filler filler." for i in range(BODY_LINES)),
        f"END {marker}",
        "",
    ]
    return "\r\n".join(lines).encode("ascii")


@dataclass
class Failure:
    at: float  # time.monotonic()
    marker: str | None
    error: str


@dataclass
class Sender:
    """One client thread: logs in, sends a few messages, QUITs, again, until ``stop``."""

    round: int
    index: int
    port: int
    tls: ssl.SSLContext
    stop: threading.Event
    acked: list[str] = field(default_factory=list)  # got 250, reply read
    unknown: list[str] = field(default_factory=list)  # in flight when the connection failed
    refused: list[Failure] = field(default_factory=list)  # a reply other than 250
    dropped: list[Failure] = field(default_factory=list)  # connection errors
    first_ack: threading.Event = field(default_factory=threading.Event)
    sessions: int = 0
    seq: int = 0

    def run(self) -> None:
        while not self.stop.is_set():
            marker: str | None = None
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as client:
                    client.starttls(context=self.tls)
                    client.login(SENDER, PASSWORD)
                    self.sessions += 1
                    for _ in range(MESSAGES_PER_SESSION + 4 * self.index):
                        if self.stop.is_set():
                            break
                        marker = f"r{self.round}-s{self.index}-m{self.seq}"
                        self.seq += 1
                        client.sendmail(SENDER, [RECIPIENT], build_message(marker))
                        self.acked.append(marker)
                        self.first_ack.set()
                        marker = None
                    client.quit()
            except smtplib.SMTPResponseException as exc:
                # An answer other than 250 (e.g. 451): a failure, unless it came after the kill.
                self.refused.append(Failure(time.monotonic(), marker, f"{exc.smtp_code} {exc.smtp_error!r}"))
                if marker is not None:
                    self.unknown.append(marker)
                return
            except (OSError, smtplib.SMTPException) as exc:
                # The connection broke: the fate of the message in flight is unknown.
                self.dropped.append(Failure(time.monotonic(), marker, repr(exc)))
                if marker is not None:
                    self.unknown.append(marker)
                self.stop.wait(0.05)


@dataclass
class Round:
    number: int
    kill_delay: float
    acked: list[str]
    unknown: list[str]
    sessions: int


def run_round(server: ServerProcess, number: int, rng: random.Random, tls: ssl.SSLContext) -> Round:
    """Send from SESSIONS threads, SIGKILL the server at a random moment, collect the results."""
    stop = threading.Event()
    senders = [Sender(number, i, server.submission_port, tls, stop) for i in range(SESSIONS)]
    threads = [threading.Thread(target=s.run, name=f"crash-r{number}-s{s.index}") for s in senders]
    for thread in threads:
        thread.start()
    kill_delay = rng.uniform(*KILL_WINDOW)
    try:
        deadline = time.monotonic() + 20
        while not any(s.first_ack.is_set() for s in senders):
            failures = [f for s in senders for f in s.refused]
            assert not failures, f"round {number}: refused before the kill: {failures}\n{server.logs()}"
            assert time.monotonic() < deadline, f"round {number}: no 250 within 20 s\n{server.logs()}"
            time.sleep(0.01)
        time.sleep(kill_delay)
        killed_at = time.monotonic()
        server.kill()
    finally:
        stop.set()
        server.kill()
        for thread in threads:
            thread.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "a client thread did not finish after the kill"
    refused = [f for s in senders for f in s.refused if f.at < killed_at]
    assert not refused, f"round {number}: the server refused messages: {refused}\n{server.logs()}"
    early = [f for s in senders for f in s.dropped if f.at < killed_at]
    assert not early, f"round {number}: connections failed before the kill: {early}\n{server.logs()}"
    return Round(
        number=number,
        kill_delay=kill_delay,
        acked=[m for s in senders for m in s.acked],
        unknown=[m for s in senders for m in s.unknown],
        sessions=sum(s.sessions for s in senders),
    )


@dataclass
class MailboxContent:
    markers: Counter[str]
    count: int


async def read_mailbox(url: str, address: str, special_use: str | None = None) -> MailboxContent:
    """Every message of the mailbox, through the store, checked for integrity; its markers."""
    db = Database(url)
    store = MailStore(DatabaseBlobStore())
    keyring = Keyring()
    markers: Counter[str] = Counter()
    try:
        async with db.read() as session:
            account = await store.account_by_address(session, address)
            assert account is not None, f"{address} is gone"
            # The owner's view: the copies are encrypted to the account's key.
            wraps = await keyring.wraps(session, account.id, None)
            sealed = await keyring.sealed_secrets(session, account.id)
            reader = MessageReader(store, Keyring.open_chain(account.id, PASSWORD, wraps, sealed))
            if special_use is None:
                box = await store.mailbox(session, account.id, "INBOX")
            else:
                box = await store.special_mailbox(session, account.id, special_use)
            messages = await store.messages(session, box.id)
            uids = [m.uid for m in messages]
            assert len(set(uids)) == len(uids), f"{box.name}: duplicate UIDs"
            assert not uids or box.uidnext > max(uids), f"{box.name}: UIDNEXT {box.uidnext} <= {max(uids)}"
            for message in messages:
                body = await reader.read(session, message)
                found = MARKER_RE.findall(body)
                assert len(found) == 1, f"{box.name} UID {message.uid}: markers {found}\n{body[:500]!r}"
                marker = found[0].decode()
                assert len(body) == message.size, f"{box.name} UID {message.uid}: size differs from body"
                assert body.endswith(build_message(marker)), f"{box.name} UID {message.uid}: body damaged"
                markers[marker] += 1
    finally:
        await db.dispose()
    return MailboxContent(markers, len(messages))


def check_store(
    inbox: MailboxContent, sent: MailboxContent, acked: set[str], unknown: set[str], context: str
) -> None:
    twice = sorted(m for m, n in inbox.markers.items() if n > 1)
    assert not twice, f"stored more than once: {twice[:20]} ({len(twice)} in all)\n{context}"
    missing = sorted(acked - inbox.markers.keys())
    assert not missing, f"acknowledged with 250 but lost: {missing[:20]} ({len(missing)} in all)\n{context}"
    phantom = sorted(inbox.markers.keys() - acked - unknown)
    assert not phantom, f"stored but never sent: {phantom[:20]}\n{context}"
    # The Sent copy is written in the same transaction as the INBOX copy.
    assert sent.markers == inbox.markers, f"Sent and INBOX differ\n{context}"


def send_one(server: ServerProcess, tls: ssl.SSLContext, marker: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", server.submission_port, timeout=10) as client:
        client.starttls(context=tls)
        client.login(SENDER, PASSWORD)
        client.mail(SENDER)
        code, reply = client.rcpt(RECIPIENT)
        assert code == 250, (code, reply)
        return client.data(build_message(marker))


@pytest.mark.slow
async def test_acknowledged_messages_survive_sigkill_exactly_once(tmp_path: Path) -> None:
    seed = int(os.environ.get("OPENMSS_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    database_url = await pg_database_url("crash")
    env = openmss_env(tmp_path / "data", domain=DOMAIN, database_url=database_url)
    url = Settings(data_dir=tmp_path / "data", database_url=database_url or "").effective_database_url
    backend = "postgresql" if database_url else "sqlite"
    server = ServerProcess(env, tmp_path)
    rounds: list[Round] = []
    started = time.monotonic()

    def context() -> str:
        lines = [f"backend={backend} seed={seed} (replay with OPENMSS_CRASH_SEED={seed})"]
        lines += [
            f"round {r.number}: killed {r.kill_delay:.3f} s after the first 250; {len(r.acked)} acked, "
            f"{len(r.unknown)} in flight, {r.sessions} SMTP sessions"
            for r in rounds
        ]
        return "\n".join(lines)

    try:
        for address in (SENDER, RECIPIENT):
            await asyncio.to_thread(run_cli, env, "account", "add", address, stdin=PASSWORD + "\n")
        await asyncio.to_thread(server.start)
        tls = ssl.create_default_context(cafile=str(server.ca))

        acked: set[str] = set()
        unknown: set[str] = set()
        for number in range(1, ROUNDS + 1):
            result = await asyncio.to_thread(run_round, server, number, rng, tls)
            rounds.append(result)
            assert len(set(result.acked)) == len(result.acked)
            acked.update(result.acked)
            unknown.update(result.unknown)
            await asyncio.to_thread(server.start)
            inbox = await read_mailbox(url, RECIPIENT)
            sent = await read_mailbox(url, SENDER, "\\Sent")
            check_store(inbox, sent, acked, unknown, f"{context()}\n{server.logs()}")

        # The store is usable after the crashes: one more message is accepted and stored once.
        code, reply = await asyncio.to_thread(send_one, server, tls, "final")
        assert code == 250, f"after the restart: {code} {reply!r}\n{context()}\n{server.logs()}"
        inbox = await read_mailbox(url, RECIPIENT)
        assert inbox.markers["final"] == 1, f"final message stored {inbox.markers['final']} times"
        check_store(inbox, await read_mailbox(url, SENDER, "\\Sent"), acked | {"final"}, unknown, context())

        elapsed = time.monotonic() - started
        print(f"{context()}\nstored {inbox.count} messages; {elapsed:.1f} s")
        assert elapsed < 60, f"the crash test took {elapsed:.1f} s\n{context()}"
    except BaseException:
        print(f"{context()}\n{server.logs()}")
        raise
    finally:
        await asyncio.to_thread(server.stop)
