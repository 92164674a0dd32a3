#!/usr/bin/env python
"""IMAP benchmark: what a mail client's everyday commands cost on a 10,000-message INBOX,
OpenMSS against a throwaway Dovecot (Debian's ``dovecot-imapd``) run in the same invocation.

One account's INBOX is filled with ``--messages`` (default 10,000) generated messages of
2 to 10 kB: varied senders and subjects (some RFC 2047 encoded), about a third of them
multipart (text + HTML alternative, or text + a small base64 attachment), 70 % \\Seen, dated
over a year. The fill is IMAP APPEND, pipelined (LITERAL+) over 4 connections with 16
commands in flight on each; OpenMSS encrypts each message to the owner's key and commits it,
as for any APPEND, and the fill rate is printed (it is not one of the measured operations,
see ``APPEND`` below). Dovecot gets the same messages the same way.

Then each operation runs for ``--seconds`` with 1 and 20 concurrent clients (``--clients``),
each client its own implicit-TLS connection, logged in and with INBOX selected once before
(not measured), issuing the command in a loop; a command started before the end of the window
is waited for and counted (so a command slower than the window still gives a figure):

``SELECT INBOX``              re-selecting; ``* N EXISTS`` checked
``UID FETCH 1:* (FLAGS)``     N FETCH lines and the number of \\Seen checked
``FETCH n (BODY.PEEK[])``     random n; the literal must be the very message appended
``UID SEARCH UNSEEN``         the count of unseen messages checked
``UID SEARCH SUBJECT "..."``  header search: every message must be read (OpenMSS: decrypted);
                              the number of hits is checked against the generated subjects
``APPEND``                    a 2-10 kB message (LITERAL+), last, so that the others see N

Each operation is warmed up by one unmeasured command (before its first client count). Ops/s,
p50 and p99 latency and the server's CPU (share of one core, the whole process tree: OpenMSS
and its storage worker, Dovecot's master and all its imap / imap-login / auth processes) are
printed per server and client count, then the ratio OpenMSS / Dovecot (target >= 0.5 on FETCH
and SEARCH). Without ``/usr/sbin/dovecot`` only the OpenMSS figures are printed ("no
baseline"); install it with ``apt-get install -y dovecot-imapd`` (under a policy-rc.d that
denies it, no system service starts). This script never touches a system Dovecot: its own
runs from a config in the temporary directory, on a free loopback port, with OpenMSS's
certificate (as root: logins as the package's dovenull, internal processes as dovecot, the
mailbox as nobody, since Dovecot refuses root for those).

    .venv/bin/python bench/imap.py                      # SQLite, 10,000 messages, 1 and 20 clients
    .venv/bin/python bench/imap.py --quick              # smoke test: 1,000 messages, 2 s runs
    .venv/bin/python bench/imap.py --ops fetch-flags,search-subject --profile search-subject
    .venv/bin/python bench/imap.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/openmss_bench

``--dovecot-mail-crypt`` runs the baseline with Dovecot's mail-crypt plugin (global keys, an
ECDH and AES-256-GCM per stored message): the at-rest encryption model OpenMSS's server-held
keys follow, so that the ratio compares encrypted stores. The target of issue 4 is measured
without it (plain Dovecot).

``--profile OP[,OP]`` runs py-spy (next to this Python) on the OpenMSS process during those
operations' measured windows and prints where the time went (raw files kept in the work dir
with ``--keep``). ``--database-url`` wipes the ``public`` schema of that database (creating the
database when missing) before the run, as ``bench/smtp.py`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.header
import email.utils
import os
import random
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# The repository before bench/ on the path: bench/'s scripts (directory.py…) must not shadow the
# packages they measure.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE.parent), str(_HERE)]

from smtp import (  # noqa: E402 (bench/smtp.py, next to this file: after the path fix above)
    OPENMSS_ARGV,
    PASSWORD,
    ServerProcess,
    _asyncpg_dsn,
    account,
    create_accounts,
    free_port,
    machine_busy_seconds,
    openmss_env,
    percentile,
    postgres_cpu_seconds,
    process_tree_cpu_seconds,
    reset_postgres,
    wait_healthz,
    wait_port,
)

DOVECOT = Path("/usr/sbin/dovecot")
PY_SPY = Path(sys.executable).with_name("py-spy")
USER = account(0)
FILL_CONNECTIONS = 4
FILL_WINDOW = 16
SEARCH_WORD = "discharge"
RATIO_TARGET = 0.5
CLIENT_TIMEOUT = 1800.0  # a header search over 10,000 encrypted messages with 20 clients is slow
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n\Z")
_APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]")
_MESSAGE_ID = re.compile(rb"\r\nMessage-ID: <(\d+)\.")


# ------------------------------------------------------------------------------------------
# The messages
# ------------------------------------------------------------------------------------------

_FIRST = (
    "Anna Alice Bruno Carla David Elena Farid Greta Hugo Ines Jonas Karin Luca Maria Nils Olga "
    "Paul Rosa Samir Tanja Ulrich Vera Walter Yusuf Zoe"
).split()
_LAST = (
    "Meier Schmid Keller Weber Huber Schneider Fischer Brunner Baumann Frei Gerber Moser Widmer "
    "Graf Roth Suter Bachmann Lehmann Wyss Zimmermann"
).split()
_DOMAINS = (
    "kantonsspital.example",
    "praxis-nord.example",
    "labor-zentrum.example",
    "radiologie.example",
    "apotheke.example",
    "insurance.example",
    "rehab-klinik.example",
    "spitex.example",
)
_TOPICS = (
    "Lab results",
    "Referral",
    "Discharge summary",
    "Appointment reminder",
    "Prescription renewal",
    "MRI report",
    "Invoice",
    "Meeting notes",
    "Case conference",
    "Consultation request",
    "Follow-up",
    "Insurance approval",
    "Vaccination record",
    "Pathology findings",
    "Physiotherapy plan",
    "Shift schedule",
)
_ENCODED_TOPICS = (
    "Überweisung",
    "Befund für Frau Müller",
    "Rückfrage zur Entlassung",
    "Kostengutsprache",
    "Résultats d'analyse",
)
_WORDS = (
    "patient treatment follow the blood pressure medication dosage was adjusted and the "
    "results are within normal range please review attached report before next appointment "
    "we recommend additional imaging of the left knee the physiotherapy should continue for "
    "three weeks contact our office if symptoms persist history of allergy no known "
    "complications consent form signed on admission regards kind best"
).split()


def _corpus(rng: random.Random, size: int = 256 * 1024) -> str:
    lines: list[str] = []
    total = 0
    while total < size:
        line = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 13))).capitalize() + "."
        lines.append(line)
        total += len(line) + 2
    return "\r\n".join(lines)


@dataclass
class Corpus:
    """The generated messages (CRLF), with what the checks need to know of them."""

    messages: list[bytes]
    flags: list[tuple[str, ...]]
    dates: list[datetime]
    subject_hits: int  # messages whose decoded Subject contains SEARCH_WORD (case-insensitive)

    @property
    def unseen(self) -> int:
        return sum(1 for f in self.flags if "\\Seen" not in f)

    @classmethod
    def generate(cls, count: int, seed: int = 20240601) -> Corpus:
        rng = random.Random(seed)
        text = _corpus(rng)
        now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
        messages: list[bytes] = []
        flags: list[tuple[str, ...]] = []
        dates: list[datetime] = []
        hits = 0
        for i in range(count):
            when = now - timedelta(seconds=rng.randint(0, 365 * 86400))
            msg, subject = _message(rng, text, i, when)
            if SEARCH_WORD in subject.casefold():
                hits += 1
            messages.append(msg)
            dates.append(when)
            f: list[str] = []
            if rng.random() < 0.7:
                f.append("\\Seen")
            if rng.random() < 0.05:
                f.append("\\Flagged")
            if rng.random() < 0.1:
                f.append("\\Answered")
            flags.append(tuple(f))
        return cls(messages, flags, dates, hits)


def _slice(rng: random.Random, text: str, size: int) -> str:
    start = rng.randrange(0, len(text) - size - 1)
    start = text.find("\r\n", start) + 2
    return text[start : start + size].rsplit("\r\n", 1)[0] + "\r\n"


def _message(rng: random.Random, text: str, index: int, when: datetime) -> tuple[bytes, str]:
    """One message of 2-10 kB and its Subject as a reader sees it (decoded)."""
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    domain = rng.choice(_DOMAINS)
    sender = f"{first.lower()}.{last.lower()}@{domain}"
    prefix = rng.choice(("", "", "", "Re: ", "Fwd: ", "AW: "))
    encoded = rng.random() < 0.05
    if encoded:
        subject = f"{prefix}{rng.choice(_ENCODED_TOPICS)} {rng.randint(100, 99999)}"
        subject_header = email.header.Header(subject, "utf-8").encode()
    else:
        subject = f"{prefix}{rng.choice(_TOPICS)} - {rng.choice(_LAST)} #{rng.randint(100, 99999)}"
        subject_header = subject
    head = (
        f"Return-Path: <{sender}>\r\n"
        f"Received: from mx.{domain} (mx.{domain} [192.0.2.{rng.randint(1, 254)}])\r\n"
        f"\tby mx.bench.test with ESMTPS id {rng.getrandbits(48):012x};\r\n"
        f"\t{email.utils.format_datetime(when)}\r\n"
        f'From: "{first} {last}" <{sender}>\r\n'
        f"To: Bench User <{USER}>\r\n"
        f"Subject: {subject_header}\r\n"
        f"Date: {email.utils.format_datetime(when)}\r\n"
        f"Message-ID: <{index}.{rng.getrandbits(64):016x}@{domain}>\r\n"
        "MIME-Version: 1.0\r\n"
    )
    target = rng.randint(2000, 10000) - len(head) - 200
    kind = rng.random()
    if kind < 0.22:  # text + HTML
        boundary = f"alt-{rng.getrandbits(64):016x}"
        body = _slice(rng, text, max(200, target * 4 // 10))
        html = "<html><body><p>" + body.replace("\r\n", "</p>\r\n<p>") + "</p></body></html>\r\n"
        content = (
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 7bit\r\n\r\n{body}"
            f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 7bit\r\n\r\n{html}"
            f"--{boundary}--\r\n"
        )
    elif kind < 0.34:  # text + attachment
        import base64

        boundary = f"mix-{rng.getrandbits(64):016x}"
        body = _slice(rng, text, max(200, target // 3))
        raw = rng.randbytes(max(300, (target - len(body)) * 3 // 4 - 300))
        b64 = base64.encodebytes(raw).decode().replace("\n", "\r\n")
        content = (
            f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 7bit\r\n\r\n{body}"
            f'--{boundary}\r\nContent-Type: application/pdf; name="report-{index}.pdf"\r\n'
            f'Content-Disposition: attachment; filename="report-{index}.pdf"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n{b64}"
            f"--{boundary}--\r\n"
        )
    else:
        content = (
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
            + _slice(rng, text, max(200, target))
        )
    return (head + content).encode(), subject


def imap_date(when: datetime) -> bytes:
    return when.strftime('"%d-%b-%Y %H:%M:%S +0000"').encode()


# ------------------------------------------------------------------------------------------
# A small IMAP client (asyncio streams, TLS, tagged commands, literals)
# ------------------------------------------------------------------------------------------


class ImapError(RuntimeError):
    pass


@dataclass
class Response:
    untagged: list[bytes]  # lines, a literal's place marked by its announcement
    literals: list[bytes]
    tagged: bytes


class Imap:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._tags = 0

    @classmethod
    async def connect(cls, port: int, tls: ssl.SSLContext) -> Imap:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=tls, limit=4 << 20), 30
        )
        client = cls(reader, writer)
        greeting = await reader.readuntil(b"\r\n")
        if not greeting.startswith(b"* OK"):
            raise ImapError(f"greeting: {greeting!r}")
        return client

    @classmethod
    async def login(cls, port: int, tls: ssl.SSLContext, *, select: bool = True) -> Imap:
        client = await cls.connect(port, tls)
        await client.command(b"LOGIN " + USER.encode() + b' "' + PASSWORD.encode() + b'"')
        if select:
            await client.command(b"SELECT INBOX")
        return client

    def next_tag(self) -> bytes:
        self._tags += 1
        return b"a%d" % self._tags

    def send(self, tag: bytes, line: bytes, literal: bytes | None = None) -> None:
        if literal is None:
            self.writer.write(tag + b" " + line + b"\r\n")
        else:  # LITERAL+ (RFC 7888): no wait for a continuation
            self.writer.write(b"%s %s {%d+}\r\n" % (tag, line, len(literal)))
            self.writer.write(literal)
            self.writer.write(b"\r\n")

    async def read_line(self, literals: list[bytes]) -> bytes:
        """One response line; literals in it are read into *literals*."""
        line = await self.reader.readuntil(b"\r\n")
        while line.endswith(b"}\r\n") and (m := _LITERAL.search(line)):
            literals.append(await self.reader.readexactly(int(m.group(1))))
            line += await self.reader.readuntil(b"\r\n")
        return line

    async def response(self, tag: bytes) -> Response:
        untagged: list[bytes] = []
        literals: list[bytes] = []
        prefix = tag + b" "
        while True:
            line = await self.read_line(literals)
            if line.startswith(prefix):
                if line[len(prefix) : len(prefix) + 3] != b"OK ":
                    raise ImapError(f"{tag.decode()}: {line.decode(errors='replace').strip()}")
                return Response(untagged, literals, line)
            if line.startswith((b"* ", b"+ ")):
                untagged.append(line)
                continue
            raise ImapError(f"unexpected line: {line[:200]!r}")

    async def bulk(self, line: bytes) -> bytes:
        """A command whose response has no literal (FLAGS, SEARCH, SELECT): the whole response,
        read in chunks and checked with bytes operations, so that a 10,000-line answer costs
        the client little (a line-by-line parse would be what is measured)."""
        tag = self.next_tag()
        self.send(tag, line)
        await self.writer.drain()
        prefix = tag + b" "
        chunks: list[bytes] = []
        tail = b"\r\n"  # the end of what was read, after a CRLF standing for the start
        async with asyncio.timeout(CLIENT_TIMEOUT):
            while True:
                chunk = await self.reader.read(1 << 20)
                if not chunk:
                    raise ImapError(f"{tag.decode()}: connection closed")
                chunks.append(chunk)
                tail = (tail + chunk)[-4096:]
                if tail.endswith(b"\r\n"):
                    start = tail.rfind(b"\r\n", 0, len(tail) - 2)
                    if start >= 0 and tail.startswith(prefix, start + 2):
                        break
        data = b"".join(chunks)
        last = data[data.rfind(b"\r\n", 0, len(data) - 2) + 2 :] if b"\r\n" in data[:-2] else data
        if not last.startswith(prefix + b"OK "):
            raise ImapError(f"{tag.decode()}: {last.decode(errors='replace').strip()}")
        if b"}\r\n" in data:
            raise ImapError(f"{tag.decode()}: a literal in a response read in bulk")
        return data

    async def command(self, line: bytes, literal: bytes | None = None) -> Response:
        tag = self.next_tag()
        self.send(tag, line, literal)
        await self.writer.drain()
        return await asyncio.wait_for(self.response(tag), CLIENT_TIMEOUT)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.command(b"LOGOUT"), 5)
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 5)


# ------------------------------------------------------------------------------------------
# The fill: pipelined APPEND
# ------------------------------------------------------------------------------------------


async def fill_connection(client: Imap, corpus: Corpus, indexes: Sequence[int], uids: dict[int, int]) -> None:
    window = asyncio.Semaphore(FILL_WINDOW)
    pending: dict[bytes, int] = {}
    done = asyncio.Event()
    remaining = len(indexes)
    failure: list[BaseException] = []

    async def read() -> None:
        nonlocal remaining
        try:
            while remaining:
                line = await client.read_line([])
                if line.startswith(b"* ") or line.startswith(b"+ "):
                    continue
                tag, _, rest = line.partition(b" ")
                index = pending.pop(tag)
                if not rest.startswith(b"OK "):
                    raise ImapError(f"APPEND of message {index}: {line!r}")
                if m := _APPENDUID.search(rest):
                    uids[index] = int(m.group(1))
                remaining -= 1
                window.release()
        except BaseException as exc:
            failure.append(exc)
            for _ in range(FILL_WINDOW):
                window.release()
        finally:
            done.set()

    reader = asyncio.create_task(read())
    for index in indexes:
        await window.acquire()
        if failure:
            break
        tag = client.next_tag()
        pending[tag] = index
        flags = " ".join(corpus.flags[index]).encode()
        client.send(
            tag, b"APPEND INBOX (" + flags + b") " + imap_date(corpus.dates[index]), corpus.messages[index]
        )
        await client.writer.drain()
    await done.wait()
    await reader
    if failure:
        raise failure[0]


async def fill(port: int, tls: ssl.SSLContext, corpus: Corpus) -> tuple[float, dict[int, int]]:
    """APPEND every message; returns (seconds, message index -> UID)."""
    clients = [await Imap.login(port, tls, select=False) for _ in range(FILL_CONNECTIONS)]
    uids: dict[int, int] = {}
    count = len(corpus.messages)
    started = time.perf_counter()
    await asyncio.gather(
        *(
            fill_connection(client, corpus, range(k, count, FILL_CONNECTIONS), uids)
            for k, client in enumerate(clients)
        )
    )
    elapsed = time.perf_counter() - started
    for client in clients:
        await client.close()
    return elapsed, uids


# ------------------------------------------------------------------------------------------
# The operations
# ------------------------------------------------------------------------------------------


@dataclass
class Expect:
    exists: int
    unseen: int
    seen: int
    subject_hits: int
    corpus: Corpus


Op = Callable[[Imap, Expect, random.Random], Awaitable[None]]


async def op_select(client: Imap, expect: Expect, rng: random.Random) -> None:
    data = await client.bulk(b"SELECT INBOX")
    if b"* %d EXISTS\r\n" % expect.exists not in data:
        raise ImapError(f"SELECT: no '* {expect.exists} EXISTS' in {data[:300]!r}")


async def op_fetch_flags(client: Imap, expect: Expect, rng: random.Random) -> None:
    data = await client.bulk(b"UID FETCH 1:* (FLAGS)")
    lines = data.count(b" FETCH (")
    if lines != expect.exists or data.count(b"\r\n* ") + 1 != lines:
        raise ImapError(f"UID FETCH 1:* (FLAGS): {lines} FETCH lines, {expect.exists} expected")
    seen = data.count(b"\\Seen")
    if seen != expect.seen:
        raise ImapError(f"UID FETCH 1:* (FLAGS): {seen} \\Seen, {expect.seen} expected")


async def op_fetch_body(client: Imap, expect: Expect, rng: random.Random) -> None:
    n = rng.randint(1, expect.exists)
    r = await client.command(b"FETCH %d (BODY.PEEK[])" % n)
    if len(r.literals) != 1 or not r.untagged or not r.untagged[0].startswith(b"* %d FETCH " % n):
        raise ImapError(f"FETCH {n} (BODY.PEEK[]): unexpected response {r.untagged[:2]!r}")
    data = r.literals[0]
    m = _MESSAGE_ID.search(data)
    if m is None or int(m.group(1)) >= len(expect.corpus.messages):
        raise ImapError(f"FETCH {n} (BODY.PEEK[]): not one of the appended messages ({len(data)} octets)")
    original = expect.corpus.messages[int(m.group(1))]
    if data != original:
        raise ImapError(
            f"FETCH {n} (BODY.PEEK[]): {len(data)} octets differ from the {len(original)} appended"
        )


def _search_count(data: bytes, what: str) -> int:
    start = data.find(b"* SEARCH")
    if start < 0:
        raise ImapError(f"{what}: no * SEARCH response")
    return len(data[start : data.index(b"\r\n", start)].split()) - 2


async def op_search_unseen(client: Imap, expect: Expect, rng: random.Random) -> None:
    found = _search_count(await client.bulk(b"UID SEARCH UNSEEN"), "UID SEARCH UNSEEN")
    if found != expect.unseen:
        raise ImapError(f"UID SEARCH UNSEEN: {found} UIDs, {expect.unseen} expected")


async def op_search_subject(client: Imap, expect: Expect, rng: random.Random) -> None:
    what = f'UID SEARCH SUBJECT "{SEARCH_WORD}"'
    found = _search_count(await client.bulk(what.encode()), what)
    if found != expect.subject_hits:
        raise ImapError(f"{what}: {found} UIDs, {expect.subject_hits} expected")


async def op_append(client: Imap, expect: Expect, rng: random.Random) -> None:
    message = expect.corpus.messages[rng.randrange(len(expect.corpus.messages))]
    await client.command(b"APPEND INBOX ()", message)


@dataclass(frozen=True)
class Operation:
    key: str
    label: str
    run: Op
    compared: bool  # has a ratio target


OPERATIONS = (
    Operation("select", "SELECT INBOX", op_select, False),
    Operation("fetch-flags", "UID FETCH 1:* (FLAGS)", op_fetch_flags, True),
    Operation("fetch-body", "FETCH n (BODY.PEEK[])", op_fetch_body, True),
    Operation("search-unseen", "UID SEARCH UNSEEN", op_search_unseen, True),
    Operation("search-subject", f'UID SEARCH SUBJECT "{SEARCH_WORD}"', op_search_subject, True),
    Operation("append", "APPEND (2-10 kB)", op_append, False),
)


# ------------------------------------------------------------------------------------------
# Servers
# ------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    server: ServerProcess
    postgres_db: str | None = None
    clients: list[Imap] = field(default_factory=list)
    expect: Expect | None = None
    fill_rate: float = 0.0

    def cpu(self) -> float:
        total = process_tree_cpu_seconds(self.server.pid)
        if self.postgres_db:
            total += postgres_cpu_seconds(self.postgres_db)
        return total


def mail_crypt_keys(root: Path) -> tuple[Path, Path]:
    """A global key pair for Dovecot's mail-crypt plugin (EC P-256, PEM), readable by the
    mailbox's user."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    private_pem, public_pem = root / "mail-crypt.key", root / "mail-crypt.pub"
    private_pem.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public_pem.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for path in (private_pem, public_pem):
        os.chmod(path, 0o644)  # a throwaway key, for Dovecot's imap processes (user nobody)
    return private_pem, public_pem


def dovecot_config(root: Path, port: int, cert: Path, key: Path, *, mail_crypt: bool = False) -> Path:
    """A Dovecot of its own: everything under *root* (its parent made traversable), on
    loopback. As root, Dovecot's login processes and mail access refuse root: logins run as
    the package's dovenull, internal processes as dovecot, the mailbox as nobody.

    ``mail_crypt``: every message is stored encrypted with the mail-crypt plugin and global
    keys (an ephemeral EC key and ECDH per message, AES-256-GCM), the model OpenMSS's
    server-held keys follow."""
    import pwd

    for sub in ("run", "state", "mail", "home"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    me = pwd.getpwuid(os.getuid())
    login_user = internal_user = me.pw_name
    mail_uid, mail_gid = me.pw_uid, me.pw_gid
    if me.pw_uid == 0:
        login_user = _system_user("dovenull").pw_name
        internal_user = _system_user("dovecot").pw_name
        nobody = _system_user("nobody")
        mail_uid, mail_gid = nobody.pw_uid, nobody.pw_gid
        os.chmod(root.parent, 0o711)  # the imap processes must reach their mail
        for sub in ("mail", "home"):
            os.chown(root / sub, mail_uid, mail_gid)
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}:{mail_uid}:{mail_gid}::{root / 'home'}::\n")
    dh = Path("/usr/share/dovecot/dh.pem")
    crypt = ""
    if mail_crypt:
        private_pem, public_pem = mail_crypt_keys(root)
        crypt = f"""mail_plugins = $mail_plugins mail_crypt
plugin {{
  mail_crypt_global_private_key = <{private_pem}
  mail_crypt_global_public_key = <{public_pem}
  mail_crypt_save_version = 2
}}
"""
    conf = root / "dovecot.conf"
    conf.write_text(
        f"""# throwaway Dovecot for bench/imap.py
base_dir = {root / "run"}
state_dir = {root / "state"}
instance_name = openmss-bench-{port}
protocols = imap
listen = 127.0.0.1
log_path = {root / "dovecot.log"}
default_internal_user = {internal_user}
default_login_user = {login_user}
first_valid_uid = {min(mail_uid, 500)}
first_valid_gid = {min(mail_gid, 100)}
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
{f"ssl_dh = <{dh}" if dh.exists() else ""}
disable_plaintext_auth = yes
auth_mechanisms = plain
mail_location = maildir:{root / "mail"}/%n
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root / "passwd"}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root / "passwd"}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
    ssl = yes
  }}
}}
service auth {{
  user = {me.pw_name}  # reads the passwd-file in this (private) directory
}}
protocol imap {{
  mail_max_userip_connections = 1000
}}
{crypt}"""
    )
    return conf


def _system_user(name: str) -> Any:
    import pwd

    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(f"Dovecot run as root needs the system user {name!r} (dovecot-core)") from None


# ------------------------------------------------------------------------------------------
# Measuring
# ------------------------------------------------------------------------------------------


@dataclass
class Measure:
    ops: int
    seconds: float
    latencies: list[float]
    server_cpu: float  # cores
    client_cpu: float
    other_cpu: float
    errors: list[str]

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0


async def measure(
    target: Target, op: Operation, clients: int, seconds: float, seed: int, *, warm_up: bool
) -> Measure:
    assert target.expect is not None
    expect = target.expect
    conns = target.clients[:clients]
    if warm_up:  # one unmeasured command
        await op.run(conns[0], expect, random.Random(seed - 1))
        if op.run is op_append:
            expect.exists += 1
            expect.unseen += 1
    latencies: list[float] = []
    errors: list[str] = []
    clock = time.perf_counter
    cpu0, client0, machine0 = target.cpu(), time.process_time(), machine_busy_seconds()
    start = clock()
    deadline = start + seconds

    async def loop(conn: Imap, rng: random.Random) -> None:
        while clock() < deadline:
            t0 = clock()
            try:
                await op.run(conn, expect, rng)
            except (ImapError, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            latencies.append(clock() - t0)

    await asyncio.gather(*(loop(c, random.Random(seed + i)) for i, c in enumerate(conns)))
    elapsed = clock() - start
    server = target.cpu() - cpu0
    if op.run is op_append:  # the mailbox grew; unflagged, so unseen
        grown = len(latencies)
        expect.exists += grown
        expect.unseen += grown
    client = time.process_time() - client0
    machine = machine_busy_seconds() - machine0
    return Measure(
        ops=len(latencies),
        seconds=elapsed,
        latencies=latencies,
        server_cpu=server / elapsed,
        client_cpu=client / elapsed,
        other_cpu=max(0.0, machine - server - client) / elapsed,
        errors=errors,
    )


class Profiler:
    """py-spy on the OpenMSS process for one measured window (raw, collapsed stacks)."""

    def __init__(self, pid: int, out: Path, seconds: float) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [str(PY_SPY), "record", "-p", str(pid), "-d", str(max(1, round(seconds))), "-r", "100",
             "-f", "raw", "-o", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip

    def finish(self) -> str:
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            return f"    (py-spy failed: {err.decode(errors='replace').strip()[-300:]})"
        return summarize_profile(self.out)


def _frame_name(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if parts else path
    return f"{name} ({short})"


_OURS = ("imap/", "store/", "message/", "crypto/", "db/", "keyring/")


def summarize_profile(path: Path, top: int = 10) -> str:
    """Samples split by where the process was: the event loop busy (Python of the main thread,
    SQLAlchemy's greenlets included), the event loop waiting (in epoll, or a greenlet parked
    on aiosqlite's future: py-spy sees its frames), aiosqlite's thread
    running SQL or waiting for work, other threads (the group committer's writer, to_thread);
    then the frames where the busy event loop spent its own time, and our functions inclusive."""
    kinds: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = busy = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame_name(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        leaf = frames[-1]
        if any(f.startswith("_connection_worker_thread ") for f in frames):
            # The worker's own frame: waiting for work, or in a C call (sqlite3) made from it.
            kind = "aiosqlite thread: idle or in C" if leaf.startswith("_connection_worker_thread") else (
                "aiosqlite thread: Python")  # fmt: skip
        elif frames[0].startswith("Thread._bootstrap"):
            kind = "other threads (writer, to_thread)"
        elif leaf.startswith(("EpollSelector.select", "BaseSelector.select")):
            kind = "event loop: waiting (epoll)"
        elif leaf.startswith("Connection._execute (aiosqlite"):  # a greenlet parked on `await future`
            kind = "event loop: awaiting aiosqlite"
        else:
            kind = "event loop: busy"
        kinds[kind] += n
        if kind != "event loop: busy":
            continue
        busy += n
        own[leaf] += n
        for f in set(frames):
            if any(part in f for part in _OURS):
                inclusive[f] += n
    if not total:
        return "    (no samples)"
    out = [
        f"    {total} samples: " + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in kinds.most_common())
    ]
    if busy:
        out.append("    event loop busy, own time (share of all samples):")
        out += [f"      {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
        out.append("    event loop busy, inclusive, OpenMSS functions:")
        out += [f"      {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def _num(x: float, digits: int = 1) -> str:
    """Fixed-point, with more decimals for small values (0.026 ops/s, not 0.0)."""
    return f"{x:.{digits}f}" if abs(x) >= 10 ** (1 - digits) or x == 0 else f"{x:.{digits + 3}f}"


def _cell(m: Measure | None) -> str:
    if m is None:
        return f"{'-':>9} {'-':>8} {'-':>8} {'-':>5}"
    p50 = 1000 * percentile(m.latencies, 0.5)
    p99 = 1000 * percentile(m.latencies, 0.99)
    rate = f"{m.rate:>9.1f}" if m.rate >= 10 else f"{m.rate:>9.3f}"
    return f"{rate} {p50:>8.1f} {p99:>8.1f} {100 * m.server_cpu:>4.0f}%"


HEADER = (
    "operation                       N |    OpenMSS ops/s   p50 ms   p99 ms   CPU |    Dovecot ops/s"
    "   p50 ms   p99 ms   CPU | ratio"
)


def print_row(op: Operation, clients: int, mine: Measure, base: Measure | None) -> None:
    ratio = f"{mine.rate / base.rate:5.2f}" if base is not None and base.rate > 0 else "    -"
    print(f"{op.label:<30} {clients:>2} | {_cell(mine)} | {_cell(base)} | {ratio}", flush=True)
    for name, m in (("openmss", mine), ("dovecot", base)):
        if m is None:
            continue
        for line in m.errors[:3]:
            print(f"       ! {name}: {line}")
        if m.client_cpu > 0.9:
            print(f"       ~ {name}: this client used {100 * m.client_cpu:.0f}% of a core (client-bound?)")
        if m.other_cpu > 0.3:
            print(f"       ~ {name}: other processes used {100 * m.other_cpu:.0f}% of a core (noise)")


LEGEND = (
    "\nops/s: commands completed in the window (a command started before its end is waited for) per\n"
    "second of the window; p50/p99: command to tagged OK, over every command of every client; CPU:\n"
    "the server's process tree (OpenMSS: main + storage worker, + PostgreSQL backends when used;\n"
    "Dovecot: master, imap, imap-login, auth...), as a share of one core over the window; N: clients,\n"
    "each its own connection (implicit TLS), logged in and INBOX selected once before. ratio:\n"
    "OpenMSS ops/s / Dovecot ops/s."
)


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------


def parse_counts(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("client counts must be >= 1")
    return values


def parse_ops(text: str) -> list[str]:
    keys = [x.strip() for x in text.split(",") if x.strip()]
    known = {op.key for op in OPERATIONS}
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown operation(s) {unknown}; known: {', '.join(sorted(known))}")
    return keys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="OpenMSS IMAP on a large INBOX, against a throwaway Dovecot")
    p.add_argument("--messages", type=int, default=None, help="messages in the INBOX (default 10000)")
    p.add_argument("--clients", type=parse_counts, default=None, help="comma-separated (default 1,20)")
    p.add_argument(
        "--seconds", type=float, default=None, help="measured time per operation and N (default 8)"
    )
    p.add_argument("--ops", type=parse_ops, default=None, help="operations to run (default all)")
    p.add_argument("--profile", type=parse_ops, default=[], help="py-spy the OpenMSS process during these")
    p.add_argument("--no-baseline", action="store_true", help="do not run Dovecot even when installed")
    p.add_argument(
        "--dovecot-mail-crypt",
        action="store_true",
        help="Dovecot stores every message encrypted (mail-crypt plugin, global EC keys)",
    )
    p.add_argument("--database-url", default="", help="PostgreSQL URL (its public schema is wiped!)")
    p.add_argument("--quick", action="store_true", help="smoke test: 1,000 messages, 2 s per run")
    p.add_argument("--workdir", type=Path, default=None, help="where the temporary data dir goes")
    p.add_argument("--keep", action="store_true", help="keep the data dirs and server logs")
    return p


async def start_openmss(workdir: Path, database_url: str) -> tuple[Target, Path]:
    data_dir = workdir / "data"
    if database_url:
        await reset_postgres(database_url)
    await create_accounts(data_dir, database_url, 1)
    ports = {name: free_port() for name in ("smtp", "submission", "submissions", "imap", "imaps", "http")}
    server = ServerProcess(
        "openmss", OPENMSS_ARGV, openmss_env(data_dir, database_url, ports), workdir / "openmss.log"
    )
    await wait_healthz(server, ports["http"])
    await wait_port(server, ports["imaps"])
    dbname = _asyncpg_dsn(database_url).rpartition("/")[2].split("?")[0] if database_url else None
    return Target("openmss", ports["imaps"], server, postgres_db=dbname), data_dir / "tls"


async def start_dovecot(workdir: Path, tls_dir: Path, *, mail_crypt: bool) -> Target:
    port = free_port()
    os.chmod(workdir / "data", 0o700)  # the work dir becomes traversable for Dovecot's users
    conf = dovecot_config(
        workdir / "dovecot", port, tls_dir / "server.pem", tls_dir / "server.key", mail_crypt=mail_crypt
    )
    server = ServerProcess(
        "dovecot", [str(DOVECOT), "-F", "-c", str(conf)], dict(os.environ), workdir / "dovecot.out"
    )
    try:
        await wait_port(server, port)
    except RuntimeError as exc:
        log = workdir / "dovecot" / "dovecot.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"{exc}\n{tail}") from None
    return Target("dovecot", port, server)


async def prepare(target: Target, tls: ssl.SSLContext, corpus: Corpus, clients: int) -> None:
    seconds, uids = await fill(target.port, tls, corpus)
    count = len(corpus.messages)
    target.fill_rate = count / seconds
    seen = count - corpus.unseen
    target.expect = Expect(count, corpus.unseen, seen, corpus.subject_hits, corpus)
    print(
        f"  {target.name}: {count} messages appended in {seconds:.1f} s = {target.fill_rate:.0f} msg/s "
        f"({FILL_CONNECTIONS} connections x {FILL_WINDOW} pipelined, LITERAL+)"
        + (f"; APPENDUID {min(uids.values())}..{max(uids.values())}" if uids else ""),
        flush=True,
    )
    target.clients = list(await asyncio.gather(*(Imap.login(target.port, tls) for _ in range(clients))))


async def bench(args: argparse.Namespace, workdir: Path) -> int:
    from openmss.tls import client_context

    count: int = args.messages or (1000 if args.quick else 10000)
    client_counts: list[int] = args.clients or [1, 20]
    seconds: float = args.seconds if args.seconds is not None else (2.0 if args.quick else 8.0)
    ops = [op for op in OPERATIONS if args.ops is None or op.key in args.ops]
    database_url: str = args.database_url
    if database_url and not database_url.startswith("postgresql"):
        raise SystemExit("error: --database-url must be a postgresql+asyncpg:// URL (empty means SQLite)")
    with_baseline: bool = args.with_baseline

    print(
        f"OpenMSS IMAP benchmark: messages={count} clients={','.join(map(str, client_counts))} "
        f"seconds={seconds:g} store={'PostgreSQL' if database_url else 'SQLite'} cores={os.cpu_count()} "
        f"baseline={'Dovecot ' + dovecot_version() if with_baseline else 'none'}"
        f"{' with mail-crypt (encrypted at rest)' if with_baseline and args.dovecot_mail_crypt else ''}",
        flush=True,
    )
    started = time.perf_counter()
    task = asyncio.current_task()
    if task is not None:  # SIGTERM: unwind like Ctrl-C, so that the servers are stopped
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    corpus = Corpus.generate(count)
    sizes = sorted(len(m) for m in corpus.messages)
    multipart = sum(1 for m in corpus.messages if b"Content-Type: multipart/" in m)
    print(
        f"corpus: {count} messages, {sum(sizes) / 1e6:.1f} MB, sizes {sizes[0]}..{sizes[-1]} B "
        f"(median {sizes[len(sizes) // 2]}), {multipart} multipart, {corpus.unseen} unseen, "
        f'{corpus.subject_hits} with "{SEARCH_WORD}" in the subject',
        flush=True,
    )

    targets: list[Target] = []
    results: list[tuple[Operation, int, Measure, Measure | None]] = []
    profiles: list[tuple[str, str]] = []
    try:
        openmss, tls_dir = await start_openmss(workdir, database_url)
        targets.append(openmss)
        dovecot: Target | None = None
        if with_baseline:
            dovecot = await start_dovecot(workdir, tls_dir, mail_crypt=args.dovecot_mail_crypt)
            targets.append(dovecot)
        tls = client_context(tls_dir / "ca.pem")
        print(f"servers up after {time.perf_counter() - started:.1f} s; filling", flush=True)
        for target in targets:
            await prepare(target, tls, corpus, max(client_counts))
        print()
        print(HEADER, flush=True)
        seed = 1
        for op in ops:
            for i, n in enumerate(client_counts):
                seed += 1000
                profiler = None
                if op.key in args.profile:
                    profiler = Profiler(openmss.server.pid, workdir / f"profile-{op.key}-{n}.txt", seconds)
                mine = await measure(openmss, op, n, seconds, seed, warm_up=i == 0)
                if profiler is not None:
                    profiles.append((f"{op.label}, N={n}", await asyncio.to_thread(profiler.finish)))
                base = None
                if dovecot is not None:
                    base = await measure(dovecot, op, n, seconds, seed, warm_up=i == 0)
                print_row(op, n, mine, base)
                results.append((op, n, mine, base))
        for target in targets:
            for client in target.clients:
                await client.close()
    finally:
        for target in reversed(targets):
            code = target.server.stop()
            if code not in (0, None, -signal.SIGTERM):
                print(
                    f"  {target.name} exited with {code}; log tail:\n{target.server.log_tail()}",
                    file=sys.stderr,
                )

    print(LEGEND)
    fills = "  ".join(f"{t.name} {t.fill_rate:.0f} msg/s" for t in targets)
    print(f"fill (pipelined APPEND, {FILL_CONNECTIONS} connections): {fills}")
    if profiles:
        print("\nOpenMSS profiles (py-spy, 100 Hz, main process):")
        for label, text in profiles:
            print(f"  {label}:\n{text}")
    print()
    failed = False
    for op, n, mine, base in results:
        failed = failed or bool(mine.errors) or (base is not None and bool(base.errors))
        if base is None:
            print(f"{op.label} N={n}: openmss={_num(mine.rate)} ops/s (no baseline)")
            continue
        ratio = mine.rate / base.rate if base.rate > 0 else float("nan")
        verdict = ""
        if op.compared:
            verdict = "  OK" if ratio >= RATIO_TARGET else f"  below the {RATIO_TARGET} target"
        print(
            f"{op.label} N={n}: openmss={_num(mine.rate)} ops/s dovecot={_num(base.rate)} ops/s "
            f"ratio={_num(ratio, 2)}{verdict}"
        )
    print(f"total time {time.perf_counter() - started:.1f} s")
    return 1 if failed else 0


def dovecot_version() -> str:
    try:
        out = subprocess.run([str(DOVECOT), "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.split()[0] if out.stdout else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.with_baseline = DOVECOT.exists() and not args.no_baseline
    if args.profile and not PY_SPY.exists():
        raise SystemExit(f"error: --profile needs {PY_SPY}")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="openmss-bench-imap-", dir=args.workdir))
    (workdir / "data").mkdir()
    try:
        return asyncio.run(bench(args, workdir))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"data and server logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
