#!/usr/bin/env python
"""Encryption at rest benchmark: what storing every mailbox copy as PGP/MIME costs OpenMSS.

Two parts, both run by default (``--only delivery`` or ``--only micro`` for one of them):

1. **Delivery throughput, encryption on vs off.** ``openmss serve`` is started with
   ``OPENMSS_ENCRYPT_MAIL=true`` and, separately, with ``OPENMSS_ENCRYPT_MAIL=false``, each
   time on a fresh copy of the same data dir (SQLite; accounts created like
   ``openmss account add`` does, with a server-held OpenPGP key, argon2id cost lowered since
   key derivation is not what is measured). The same client load as ``bench/smtp.py``
   (its code is reused): N concurrent STARTTLS + AUTH PLAIN submission sessions, each sending
   MAIL/RCPT/DATA in a loop, one local recipient per message, so every message is filed
   twice (recipient's INBOX, sender's Sent): two encryptions per message when on. Only 250
   replies count. Runs are interleaved, on then off, and with ``--repeat K`` the order
   alternates (on/off, off/on, ...) so that a drift of the machine's load hits both sides;
   the median of the K runs per side is reported, with the ratio on/off (target >= 0.7 at
   10 kB), the server's CPU time per message (main and storage worker processes) and the
   bytes stored per message. After each run the store is checked: one INBOX and one Sent
   row per 250, all of them encrypted (``decrypt_on_read``) when on and none when off, and
   one INBOX message read back through ``Accounts.unlock_address`` + ``MessageReader``
   (decrypted when on). Error lines of the server's log are shown under its row.

2. **Micro-benchmark of the crypto.** ``mailserver.message.pgpmime.encrypt_message`` and
   ``decrypt_message`` (key from ``openmss.crypto.pgp.generate_key``; ``mark_protected=False``
   as the delivery path uses for server-held keys) on a multipart/mixed message with a text
   part and a base64 attachment of 1 MiB and 10 MiB of random (incompressible) data. Median
   ms over a few runs and MiB/s of the plaintext message, next to baselines computed on the
   same bytes in the same run (a copy, SHA-256, AES-256-GCM from ``cryptography``) so the
   figures mean something on a noisy machine. "of which" rows split the PGP/MIME figures
   into the OpenPGP step (``openmss.crypto.pgp`` on ASCII-armoured data, as stored) and,
   for decryption, the MIME parse that finds the encrypted part.

    .venv/bin/python bench/crypto.py                  # N=10, 10 kB, 8 s per run; 1 and 10 MiB
    .venv/bin/python bench/crypto.py --quick          # smoke test (short runs)
    .venv/bin/python bench/crypto.py --repeat 3       # median of 3 runs per side (noisy machine)
    .venv/bin/python bench/crypto.py --only micro --attachments 1,10,25
    .venv/bin/python bench/crypto.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/openmss_bench

``--database-url`` wipes the ``public`` schema of that database before every server run
(creating the database when missing), as ``bench/smtp.py`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import email.utils
import hashlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

# The repository before bench/ on the path: bench/'s scripts (directory.py…) must not shadow the
# packages they measure.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE.parent), str(_HERE)]

from smtp import (  # noqa: E402 (bench/smtp.py, next to this file: after the path fix above)
    DOMAIN,
    HEADER,
    HOSTNAME,
    LEGEND,
    OPENMSS_ARGV,
    PASSWORD,
    Result,
    ServerProcess,
    Target,
    _asyncpg_dsn,
    account,
    body_for,
    cpu_seconds,
    free_port,
    openmss_env,
    openmss_metrics,
    print_row,
    process_tree_cpu_seconds,
    reset_postgres,
    run_load,
    wait_healthz,
)

MiB = 1024 * 1024
RATIO_TARGET = 0.7
# Key derivation (argon2id) of the accounts' key wraps: lowered, it is not what is measured.
KDF_ENV = {
    "OPENMSS_KEY_KDF_MEMORY_KIB": "1024",
    "OPENMSS_KEY_KDF_TIME_COST": "1",
    "OPENMSS_KEY_KDF_PARALLELISM": "1",
}
if TYPE_CHECKING:
    from mailserver.store import MailStore
    from openmss.accounts import Accounts
    from openmss.db.engine import Database

SERVER_PORTS = ("smtp", "submission", "submissions", "imap", "imaps", "http")


# ------------------------------------------------------------------------------------------
# Accounts (with a server-held key) and the store check
# ------------------------------------------------------------------------------------------


@dataclass
class StoreTools:
    """The account service and the mail store on a database, without a server running."""

    db: Database
    accounts: Accounts
    store: MailStore

    @classmethod
    def open(cls, data_dir: Path, database_url: str) -> StoreTools:
        from mailserver.store import DatabaseBlobStore, MailStore
        from openmss.accounts import Accounts, transaction_writer
        from openmss.crypto.keywrap import KdfParams
        from openmss.db.engine import Database
        from openmss.keyring.store import Keyring
        from openmss.passwords import Passwords
        from openmss.settings import Settings

        settings = Settings(data_dir=data_dir, database_url=database_url, domains=[DOMAIN], hostname=HOSTNAME)
        db = Database(settings.effective_database_url)
        store = MailStore(DatabaseBlobStore())
        kdf = KdfParams(
            int(KDF_ENV["OPENMSS_KEY_KDF_MEMORY_KIB"]),
            int(KDF_ENV["OPENMSS_KEY_KDF_TIME_COST"]),
            int(KDF_ENV["OPENMSS_KEY_KDF_PARALLELISM"]),
        )
        accounts = Accounts(
            db=db, store=store, keyring=Keyring(kdf), passwords=Passwords(), write=transaction_writer(db)
        )
        return cls(db=db, accounts=accounts, store=store)

    async def close(self) -> None:
        await self.db.dispose()


async def create_accounts_with_keys(data_dir: Path, database_url: str, count: int) -> None:
    """Migrate the fresh database and create ``count`` accounts the way ``openmss account add``
    does (``Accounts.create``: password hash, server-held OpenPGP key, mailboxes)."""
    from openmss.db.migrate import upgrade

    tools = StoreTools.open(data_dir, database_url)
    try:
        await upgrade(tools.db)
        created = await asyncio.gather(
            *(
                tools.accounts.create(account(i), PASSWORD, f"Bench user {i}", actor="bench")
                for i in range(count)
            )
        )
        if any(account_id is None for account_id in created):
            raise RuntimeError("an account already existed in a fresh database")
    finally:
        await tools.close()


_CHECK_SQL = (
    "SELECT b.name, COUNT(*), SUM(CASE WHEN m.decrypt_on_read THEN 1 ELSE 0 END) "
    "FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id GROUP BY b.name"
)
_BLOBS_SQL = "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blobs"


@dataclass
class StoreCheck:
    counts: dict[str, int]
    encrypted: dict[str, int]  # rows per mailbox stored encrypted (decrypt_on_read)
    blobs: int  # stored bodies (copies of a message are shared when not encrypted)
    blob_bytes: int
    sample: str  # what reading one INBOX message back gave

    @property
    def inbox(self) -> int:
        return self.counts.get("INBOX", 0)

    @property
    def sent(self) -> int:
        return self.counts.get("Sent", 0)

    @property
    def total_encrypted(self) -> int:
        return sum(self.encrypted.values())

    @property
    def total(self) -> int:
        return sum(self.counts.values())


async def check_store(data_dir: Path, database_url: str, reader_address: str, encrypt: bool) -> StoreCheck:
    """Count the stored copies and read the newest INBOX message of ``reader_address`` back
    through the path IMAP uses (unlock with the password, ``MessageReader``)."""
    from sqlalchemy import text

    from mailserver.message.pgpmime import is_encrypted
    from mailserver.store.reader import MessageReader

    tools = StoreTools.open(data_dir, database_url)
    try:
        accounts, store = tools.accounts, tools.store
        counts: dict[str, int] = {}
        encrypted: dict[str, int] = {}
        async with tools.db.read() as session:
            for name, n, enc in (await session.execute(text(_CHECK_SQL))).all():
                counts[str(name)] = int(n)
                encrypted[str(name)] = int(enc or 0)
            blobs, blob_bytes = (await session.execute(text(_BLOBS_SQL))).one()
        chain = await accounts.unlock_address(reader_address, PASSWORD)
        reader = MessageReader(store, chain)
        async with tools.db.read() as session:
            box = await store.mailbox(session, chain.account_id, "INBOX")
            messages = await store.messages(session, box.id)
            if not messages:
                return StoreCheck(
                    counts, encrypted, int(blobs), int(blob_bytes), "no INBOX message to read back"
                )
            newest = messages[-1]
            stored = await store.read(session, newest)
            plain = await reader.read(session, newest)
        problems = []
        if is_encrypted(stored) != encrypt or newest.decrypt_on_read != encrypt:
            problems.append(f"stored {'encrypted' if is_encrypted(stored) else 'in clear'}")
        if b"Subject: OpenMSS benchmark " not in plain or b"Lorem ipsum dolor sit amet" not in plain:
            problems.append("read back without the sent subject or body")
        state = "encrypted" if is_encrypted(stored) else "clear"
        sample = f"uid {newest.uid}: stored {len(stored)} B {state}, read back {len(plain)} B" + (
            f" -> PROBLEM: {'; '.join(problems)}" if problems else " OK"
        )
        return StoreCheck(counts, encrypted, int(blobs), int(blob_bytes), sample)
    finally:
        await tools.close()


# ------------------------------------------------------------------------------------------
# Delivery throughput: encryption on vs off
# ------------------------------------------------------------------------------------------


@dataclass
class Run:
    encrypt: bool
    result: Result
    check: StoreCheck
    accepted: int  # the server's own count (metrics)
    ok: bool
    main_cpu: float  # the server's main process (SMTP sessions), share of one core
    worker_cpu: float  # its child processes (the storage worker: encryption, commits)

    @property
    def stored_kb_per_message(self) -> float:
        return self.check.blob_bytes / 1000 / self.check.inbox if self.check.inbox else float("nan")

    @property
    def cpu_ms_per_message(self) -> float:
        r = self.result
        return 1000 * r.server_cpu * r.seconds / r.stats.in_window if r.stats.in_window else float("nan")


def side_name(encrypt: bool) -> str:
    return "enc-on" if encrypt else "enc-off"


async def prepare_data(template: Path, data_dir: Path, database_url: str, sessions: int) -> None:
    """A fresh store for one server run: a copy of the SQLite template (accounts and keys are
    created once), or, for PostgreSQL, a wiped schema with the accounts created again."""
    if database_url:
        await asyncio.to_thread(data_dir.mkdir, parents=True)
        await reset_postgres(database_url)
        await create_accounts_with_keys(data_dir, database_url, sessions)
    else:
        await asyncio.to_thread(shutil.copytree, template, data_dir)


async def one_run(args: argparse.Namespace, workdir: Path, template: Path, index: int, encrypt: bool) -> Run:
    from openmss.tls import client_context

    name = side_name(encrypt)
    run_dir = workdir / f"run{index:02d}-{name}"
    data_dir = run_dir / "data"
    await prepare_data(template, data_dir, args.database_url, args.sessions)
    ports = {port: free_port() for port in SERVER_PORTS}
    env = openmss_env(data_dir, args.database_url, ports)
    env.update(KDF_ENV, OPENMSS_ENCRYPT_MAIL="true" if encrypt else "false")
    server = ServerProcess(name, OPENMSS_ARGV, env, run_dir / "openmss.log")
    accepted = -1
    try:
        await wait_healthz(server, ports["http"])
        tls = client_context(data_dir / "tls" / "ca.pem")
        postgres_db = None
        if args.database_url:
            postgres_db = _asyncpg_dsn(args.database_url).rpartition("/")[2].split("?")[0]
        target = Target(name, ports["submission"], server, http_port=ports["http"], postgres_db=postgres_db)
        split = asyncio.create_task(split_cpu(server.pid, ports["http"], args.warmup, args.seconds))
        try:
            result = await run_load(target, args.sessions, tls, args.seconds, args.warmup, args.size)
        except BaseException:
            split.cancel()
            raise
        main_cpu, worker_cpu = float("nan"), float("nan")
        done, _ = await asyncio.wait({split}, timeout=2.0)
        if split in done:
            main_cpu, worker_cpu = split.result()
        else:  # no message was ever accepted: no window to measure
            split.cancel()
        metrics = await asyncio.to_thread(openmss_metrics, ports["http"])
        accepted = int(metrics.get("openmss_smtp_messages_accepted_total", -1))
    finally:
        code = server.stop()
        if code not in (0, None, -signal.SIGTERM):
            print(f"  {name} exited with {code}; log tail:\n{server.log_tail()}", file=sys.stderr)
    print_row(result)
    log_problems(server)

    check = await check_store(data_dir, args.database_url, account(1 % args.sessions), encrypt)
    acked, uncertain = result.stats.acked, result.stats.uncertain
    plausible = acked <= check.inbox <= acked + uncertain and check.inbox == check.sent
    right_state = check.total_encrypted == (check.total if encrypt else 0)
    read_back = check.sample.endswith(" OK")
    ok = acked > 0 and plausible and right_state and read_back
    run = Run(encrypt, result, check, accepted, ok, main_cpu, worker_cpu)
    print(
        f"       store: 250s={acked} server-accepted={accepted} INBOX={check.inbox} Sent={check.sent} "
        f"encrypted={check.total_encrypted}/{check.total} bodies={check.blobs} "
        f"({run.stored_kb_per_message:.1f} kB per message) -> {'OK' if ok else 'MISMATCH'}\n"
        f"       server CPU split: main process {100 * main_cpu:.0f}%, storage worker "
        f"{100 * worker_cpu:.0f}%; read back {check.sample}",
        flush=True,
    )
    if not args.keep:
        await asyncio.to_thread(shutil.rmtree, run_dir, ignore_errors=True)
    return run


async def split_cpu(pid: int, http_port: int, warmup: float, seconds: float) -> tuple[float, float]:
    """The server's CPU over the measured window, split into its main process and its
    children (the storage worker process). ``run_load`` starts its window once every session
    has logged in (argon2id: not to be counted); the first accepted message marks that here."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        metrics = await asyncio.to_thread(openmss_metrics, http_port)
        if metrics["openmss_smtp_messages_accepted_total"] > 0:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(warmup)
    t0, main0, tree0 = time.perf_counter(), cpu_seconds(pid), process_tree_cpu_seconds(pid)
    await asyncio.sleep(seconds)
    t1, main1, tree1 = time.perf_counter(), cpu_seconds(pid), process_tree_cpu_seconds(pid)
    elapsed = t1 - t0
    return (main1 - main0) / elapsed, ((tree1 - main1) - (tree0 - main0)) / elapsed


def log_problems(server: ServerProcess, limit: int = 8) -> None:
    """Show the server log lines that look like trouble (the log level is WARNING)."""
    try:
        lines = server.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return
    bad = [line for line in lines if any(word in line for word in ("ERROR", "CRITICAL", "Traceback"))]
    warnings = [line for line in lines if "WARNING" in line]
    for line in bad[:limit]:
        print(f"       log: {line[:200]}")
    if len(bad) > limit:
        print(f"       log: ... and {len(bad) - limit} more error lines")
    if warnings:
        print(f"       log: {len(warnings)} warning line(s), first: {warnings[0][:200]}")


async def delivery_bench(args: argparse.Namespace, workdir: Path) -> bool:
    print(
        f"\n== Delivery: encryption at rest on vs off  sessions={args.sessions} size={args.size} B "
        f"seconds={args.seconds:g} warm-up={args.warmup:g} repeat={args.repeat} "
        f"store={'PostgreSQL' if args.database_url else 'SQLite'} cores={os.cpu_count()}",
        flush=True,
    )
    started = time.perf_counter()
    template = workdir / "template"
    if not args.database_url:
        template.mkdir()
        await create_accounts_with_keys(template, "", args.sessions)
        print(f"{args.sessions} accounts with server-held keys in {time.perf_counter() - started:.1f} s")
    print(HEADER, flush=True)

    runs: list[Run] = []
    for rep in range(args.repeat):
        order = (True, False) if rep % 2 == 0 else (False, True)
        for encrypt in order:
            runs.append(await one_run(args, workdir, template, len(runs), encrypt))
    print(LEGEND)

    noisy = [run for run in runs if run.result.other_cpu > 0.25]
    if noisy:
        worst = max(run.result.other_cpu for run in noisy)
        print(
            f"warning: other processes used up to {100 * worst:.0f}% of a core during {len(noisy)} "
            "run(s): the machine was not idle, figures are noisy"
        )

    def median(values: Sequence[float]) -> float:
        return statistics.median(values) if values else float("nan")

    on = [run for run in runs if run.encrypt]
    off = [run for run in runs if not run.encrypt]
    on_rate = median([run.result.rate for run in on])
    off_rate = median([run.result.rate for run in off])
    ratio = on_rate / off_rate if off_rate > 0 else float("nan")
    on_cpu = median([run.cpu_ms_per_message for run in on])
    off_cpu = median([run.cpu_ms_per_message for run in off])
    what = f"median of {args.repeat} runs per side" if args.repeat > 1 else "one run per side"
    print(f"\nN={args.sessions} size={args.size} B ({what}):")
    print(f"  encryption on : {on_rate:8.1f} msg/s   runs: {', '.join(f'{r.result.rate:.1f}' for r in on)}")
    print(f"  encryption off: {off_rate:8.1f} msg/s   runs: {', '.join(f'{r.result.rate:.1f}' for r in off)}")
    print(
        f"  ratio on/off = {ratio:.2f} (target >= {RATIO_TARGET:.2f}: "
        f"{'met' if ratio >= RATIO_TARGET else 'NOT met'})"
    )
    print(
        f"  server CPU per message: on {on_cpu:.2f} ms, off {off_cpu:.2f} ms "
        f"(encryption adds {on_cpu - off_cpu:.2f} ms, INBOX and Sent copies)"
    )
    on_worker = median([run.worker_cpu for run in on])
    off_worker = median([run.worker_cpu for run in off])
    print(f"  storage worker process busy: on {100 * on_worker:.0f}%, off {100 * off_worker:.0f}% of a core")
    on_kb = median([run.stored_kb_per_message for run in on])
    off_kb = median([run.stored_kb_per_message for run in off])
    print(
        f"  stored per message: on {on_kb:.1f} kB (INBOX and Sent share one body encrypted to both keys), "
        f"off {off_kb:.1f} kB (one shared body)"
    )
    failed = [run for run in runs if not run.ok]
    print(
        "store check: "
        + ("OK for every run" if not failed else f"MISMATCH in {len(failed)} of {len(runs)} runs")
    )
    print(f"delivery part took {time.perf_counter() - started:.1f} s", flush=True)
    return not failed


# ------------------------------------------------------------------------------------------
# Micro-benchmark: PGP/MIME encryption of large attachments
# ------------------------------------------------------------------------------------------


def attachment_message(attachment_size: int) -> bytes:
    """A multipart/mixed message as a mail client sends it: a short text part and a base64
    attachment of ``attachment_size`` random bytes (incompressible, like a PDF or a JPEG)."""
    boundary = f"bench-{uuid.uuid4().hex}"
    encoded = base64.encodebytes(os.urandom(attachment_size)).replace(b"\n", b"\r\n")
    head = (
        f"From: Bench Sender <{account(0)}>\r\n"
        f"To: <{account(1)}>\r\n"
        "Subject: Scan of the referral letter\r\n"
        f"Date: {email.utils.formatdate(localtime=False)}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@{DOMAIN}>\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n'
        "\r\n"
        "This is a multi-part message in MIME format.\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
    ).encode("ascii")
    attachment_head = (
        f"\r\n--{boundary}\r\n"
        'Content-Type: application/pdf; name="referral.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="referral.pdf"\r\n'
        "\r\n"
    ).encode("ascii")
    return head + body_for(1500) + attachment_head + encoded + f"\r\n--{boundary}--\r\n".encode("ascii")


def timed(work: Callable[[], object], runs: int) -> float:
    """Median wall-clock seconds of ``runs`` calls, after one call that is not counted."""
    work()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def micro_bench(sizes_mib: Sequence[float], runs: int) -> bool:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from mailserver.message.pgpmime import decrypt_message, encrypt_message, encrypted_payload
    from openmss.crypto import pgp

    print(
        f"\n== Micro-benchmark: PGP/MIME encrypt/decrypt of a message with a base64 attachment "
        f"(median of {runs} runs after one warm-up; MiB/s of the plaintext message)\n"
        "'of which' rows: the OpenPGP step alone (ASCII-armoured data, as stored) and the MIME parse\n"
        "that finds the encrypted part (pgpmime.encrypted_payload, Python's email parser)",
        flush=True,
    )
    key = pgp.generate_key(account(1), "Bench user 1")
    cert, secret = pgp.load_cert(key.public), pgp.load_secret(key.secret)
    aes = AESGCM(AESGCM.generate_key(bit_length=256))
    nonce = os.urandom(12)
    columns = ("attachment", "message", "operation", "median ms", "MiB/s", "x AES-GCM")
    print("{:>10} {:>10} {:<26} {:>10} {:>8} {:>9}".format(*columns))
    ok = True
    for size_mib in sizes_mib:
        message = attachment_message(int(size_mib * MiB))
        encrypted = encrypt_message(message, [cert], mark_protected=False)
        if decrypt_message(encrypted, [secret]) != message:
            print(f"  PROBLEM: {size_mib:g} MiB: decrypt(encrypt(m)) != m")
            ok = False
        payload = encrypted_payload(encrypted)
        mib = len(message) / MiB
        operations: list[tuple[str, Callable[[], object]]] = [
            ("baseline: bytes copy", partial(bytearray, message)),
            ("baseline: SHA-256", partial(hashlib.sha256, message)),
            ("baseline: AES-256-GCM", partial(aes.encrypt, nonce, message, None)),
            ("pgpmime.encrypt_message", partial(encrypt_message, message, [cert], mark_protected=False)),
            ("  of which pgp.encrypt", partial(pgp.encrypt, message, [cert], armor=True)),
            ("pgpmime.decrypt_message", partial(decrypt_message, encrypted, [secret])),
            ("  of which MIME parse", partial(encrypted_payload, encrypted)),
            ("  of which pgp.decrypt", partial(pgp.decrypt, payload, secret)),
        ]
        timings = [(operation, timed(work, runs)) for operation, work in operations]
        aes_seconds = timings[2][1]
        for i, (operation, seconds) in enumerate(timings):
            label = f"{size_mib:g} MiB" if i == 0 else ""
            size_label = f"{mib:.2f} MiB" if i == 0 else ""
            print(
                f"{label:>10} {size_label:>10} {operation:<26} {1000 * seconds:>10.1f} "
                f"{mib / seconds:>8.0f} {seconds / aes_seconds:>9.1f}",
                flush=True,
            )
        print(f"{'':>21} stored size: {len(encrypted) / MiB:.2f} MiB ({len(encrypted) / len(message):.2f}x)")
    return ok


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------


def parse_sizes(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError("attachment sizes must be > 0 MiB")
    return values


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="OpenMSS encryption at rest: delivery on vs off, PGP/MIME speed")
    p.add_argument("--only", choices=("delivery", "micro"), default=None, help="run only one part")
    p.add_argument("--sessions", type=positive_int, default=10, help="concurrent sessions (default 10)")
    p.add_argument("--size", type=int, default=10240, help="message size in bytes (default 10240)")
    p.add_argument("--seconds", type=float, default=None, help="measured time per run (default 8)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up per run, not counted (default 1)")
    p.add_argument(
        "--repeat", type=positive_int, default=1, help="runs per side, median reported (default 1)"
    )
    p.add_argument(
        "--attachments", type=parse_sizes, default=None, help="attachment sizes in MiB (default 1,10)"
    )
    p.add_argument(
        "--runs", type=positive_int, default=None, help="micro-benchmark runs per figure (default 5)"
    )
    p.add_argument("--database-url", default="", help="PostgreSQL URL (its public schema is wiped!)")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 s runs, 3 micro runs")
    p.add_argument("--workdir", type=Path, default=None, help="where the temporary data dirs go")
    p.add_argument("--keep", action="store_true", help="keep the data dirs and server logs")
    return p


async def bench(args: argparse.Namespace, workdir: Path) -> int:
    task = asyncio.current_task()
    if task is not None:  # SIGTERM: unwind like Ctrl-C, so that the server is stopped
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    started = time.perf_counter()
    ok = True
    if args.only in (None, "micro"):
        ok = micro_bench(args.attachments, args.runs) and ok
    if args.only in (None, "delivery"):
        ok = await delivery_bench(args, workdir) and ok
    print(f"\ntotal time {time.perf_counter() - started:.1f} s")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.seconds is None:
        args.seconds = 2.0 if args.quick else 8.0
    if args.warmup is None:
        args.warmup = 0.5 if args.quick else 1.0
    if args.runs is None:
        args.runs = 3 if args.quick else 5
    if args.attachments is None:
        args.attachments = [1.0, 10.0]
    if args.database_url and not args.database_url.startswith("postgresql"):
        raise SystemExit("error: --database-url must be a postgresql+asyncpg:// URL (empty means SQLite)")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="openmss-bench-crypto-", dir=args.workdir))
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
