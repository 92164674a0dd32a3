#!/usr/bin/env python
"""SMTP submission benchmark: messages per second accepted *and durably stored* by OpenMSS.

For every session count N (default 1, 10, 50) the client opens N concurrent submission
sessions (connect, STARTTLS verified against the server's CA, AUTH PLAIN) and sends messages in
a loop over each connection (MAIL, RCPT, DATA) for a fixed time after a short warm-up. Only
messages answered with 250 count.

The same client load is run, in the same invocation, against a baseline: plain aiosmtpd with
the same TLS context (``openmss.tls.server_context`` on the same certificate), STARTTLS
required, a cheap AUTH check and a handler that discards the message. The ratio
openmss / baseline is what the target refers to (>= 0.5 at 10 sessions).

Both servers run as separate processes (so that each gets a core of its own); this script is
the client. At the end the OpenMSS store is checked: every acknowledged message must be in
the recipient's INBOX and in the sender's Sent mailbox.

    .venv/bin/python bench/smtp.py                      # SQLite, N = 1, 10, 50
    .venv/bin/python bench/smtp.py --quick              # smoke test
    .venv/bin/python bench/smtp.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/openmss_bench

``--database-url`` wipes the ``public`` schema of that database (creating the database when
missing) before the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import hmac
import itertools
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

# The repository before bench/ on the path: bench/'s scripts (directory.py…) must not shadow the
# packages they measure.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE.parent), str(_HERE)]

DOMAIN = "bench.test"
HOSTNAME = "mx.bench.test"
PASSWORD = "bench-password-0123456789"
PASSWORD_ENV = "OPENMSS_BENCH_PASSWORD"
CLIENT_TIMEOUT = 60.0
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SCRIPT = str(Path(__file__).resolve())
_OPENMSS_BIN = Path(sys.executable).with_name("openmss")
OPENMSS_ARGV = (
    [str(_OPENMSS_BIN), "serve"] if _OPENMSS_BIN.exists() else [sys.executable, "-m", "openmss.cli", "serve"]
)

# Health and metrics polls of a server this script started on loopback: its certificate is
# generated at its first start, so it is not verified here (the tests of TLS are elsewhere).
_LOOPBACK_TLS = ssl._create_unverified_context()


def account(index: int) -> str:
    return f"user{index:03d}@{DOMAIN}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------
# Baseline server (runs in its own process: ``smtp.py --baseline-server``)
# ------------------------------------------------------------------------------------------


def baseline_server(port: int, cert: Path, key: Path) -> int:
    from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

    from openmss.tls import server_context

    password = os.environ.get(PASSWORD_ENV, PASSWORD).encode()
    suffix = b"@" + DOMAIN.encode()
    tls = server_context(cert, key)

    class DiscardHandler:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            return "250 2.0.0 OK: discarded"

    def authenticator(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.lower().endswith(suffix)
            and hmac.compare_digest(auth_data.password, password)
        )
        return AuthResult(success=ok)

    handler = DiscardHandler()

    def factory() -> SMTP:
        return SMTP(
            handler,
            hostname=HOSTNAME,
            ident="baseline ESMTP",
            tls_context=tls,
            require_starttls=True,
            auth_require_tls=True,
            authenticator=authenticator,
        )

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = await loop.create_server(factory, host="127.0.0.1", port=port)
        print(f"baseline aiosmtpd listening on 127.0.0.1:{port}", flush=True)
        try:
            await stop.wait()
        finally:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    asyncio.run(serve())
    return 0


# ------------------------------------------------------------------------------------------
# Server processes
# ------------------------------------------------------------------------------------------


class ServerProcess:
    """A child process whose output goes to a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log: TextIO = log_path.open("w")
        self.proc = subprocess.Popen(
            list(argv), env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  {self.name} did not stop within {timeout:.0f} s: SIGKILL", file=sys.stderr)
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def openmss_env(
    data_dir: Path, database_url: str, ports: dict[str, int], extra: Sequence[str] = ()
) -> dict[str, str]:
    """The server's environment: only the settings named here (and ``--set NAME=VALUE``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMSS_")}
    env.update(
        OPENMSS_DATA_DIR=str(data_dir),
        OPENMSS_DATABASE_URL=database_url,
        OPENMSS_DOMAINS=f'["{DOMAIN}"]',
        OPENMSS_HOSTNAME=HOSTNAME,
        OPENMSS_LOG_LEVEL="WARNING",
        OPENMSS_LOG_FORMAT="text",
        **{f"OPENMSS_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    )
    for item in extra:
        name, _, value = item.partition("=")
        env[f"OPENMSS_{name.upper()}"] = value
    return env


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=_LOOPBACK_TLS) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def wait_healthz(server: ServerProcess, http_port: int, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    url = f"https://127.0.0.1:{http_port}/healthz"
    last = "no answer"
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited during start-up:\n{server.log_tail()}")
        try:
            status, body = await asyncio.to_thread(http_get, url, 2.0)
            if status == 200:
                return
            last = f"{status} {body[:200]!r}"
        except OSError as exc:
            last = repr(exc)
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{server.name} not healthy after {limit:.0f} s ({last}):\n{server.log_tail()}")


async def wait_port(server: ServerProcess, port: int, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited during start-up:\n{server.log_tail()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return
    raise RuntimeError(f"{server.name} does not listen on {port}:\n{server.log_tail()}")


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state first), or [] if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU time of a process (all its threads), from /proc; with
    *reaped_children*, plus that of its children that exited (cutime + cstime)."""
    fields = _stat(pid)
    if not fields:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


def process_tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and of its live descendants (OpenMSS's storage worker process)."""
    total = cpu_seconds(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(process_tree_cpu_seconds(int(child)) for child in children)


def machine_busy_seconds() -> float:
    """CPU time spent by every process on the machine (all cores), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICKS


def postgres_cpu_seconds(dbname: str) -> float:
    """CPU time of the PostgreSQL backends serving *dbname* and of the WAL writer (it does the
    fsyncs), plus that of every backend that already exited (the postmaster's reaped
    children: short-lived connections would otherwise escape the count; this includes other
    databases' backends, so it is an upper bound on a shared server)."""
    total = 0.0
    postmasters: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            if f" {dbname} " in title or "walwriter" in title:
                total += cpu_seconds(int(entry.name))
                postmasters.add(int(_stat(int(entry.name))[1]))
    return total + sum(cpu_seconds(pid, reaped_children=True) - cpu_seconds(pid) for pid in postmasters)


def openmss_metrics(http_port: int) -> dict[str, float]:
    """The few Prometheus samples the report uses (unlabelled or summed over labels)."""
    wanted = (
        "openmss_store_commit_seconds_sum",
        "openmss_store_commit_seconds_count",
        "openmss_smtp_messages_accepted_total",
        "openmss_smtp_rejections_total",
        "openmss_group_commits_total",
        "openmss_group_commit_units_total",
    )
    out = dict.fromkeys(wanted, 0.0)
    try:
        status, body = http_get(f"https://127.0.0.1:{http_port}/metrics")
    except OSError:
        return out
    if status != 200:
        return out
    for line in body.decode("utf-8", "replace").splitlines():
        if line.startswith("#") or not line:
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in out:
            with contextlib.suppress(ValueError):
                out[name] += float(line.rsplit(" ", 1)[1])
    return out


# ------------------------------------------------------------------------------------------
# Database preparation and the final store check
# ------------------------------------------------------------------------------------------


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def reset_postgres(url: str) -> None:
    import asyncpg

    dsn = _asyncpg_dsn(url)
    base, _, dbname = dsn.rpartition("/")
    dbname = dbname.split("?", 1)[0]
    if not dbname or not dbname.replace("_", "").isalnum():
        raise SystemExit(f"error: unexpected database name in {url!r}")
    admin = await asyncpg.connect(f"{base}/test")
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", dbname):
            await admin.execute(f'CREATE DATABASE "{dbname}"')
            print(f"created PostgreSQL database {dbname}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()


async def create_accounts(data_dir: Path, database_url: str, count: int) -> None:
    """Migrate the fresh database and create ``count`` accounts sharing one password hash, each
    with its server-held OpenPGP key (as ``openmss account add`` makes them: mail is encrypted
    to it on delivery). The key wrap uses a cheap argon2id: logins are not what is measured."""
    from mailserver.store import DatabaseBlobStore, MailStore
    from openmss.crypto.keywrap import KdfParams
    from openmss.db.engine import Database
    from openmss.db.migrate import upgrade
    from openmss.keyring.store import Keyring
    from openmss.passwords import Passwords
    from openmss.settings import Settings

    settings = Settings(data_dir=data_dir, database_url=database_url, domains=[DOMAIN], hostname=HOSTNAME)
    db = Database(settings.effective_database_url)
    try:
        await upgrade(db)
        store = MailStore(DatabaseBlobStore())
        hashed = await asyncio.to_thread(Passwords().hash, PASSWORD)
        keyring = Keyring(KdfParams(memory_kib=1024, time_cost=1, parallelism=1))
        keys = [keyring.prepare_server_key(account(i), PASSWORD) for i in range(count)]
        with db.sync_transaction() as session:
            for i in range(count):
                created = store.create_account(session, account(i), hashed, f"Bench user {i}")
                keyring.install(session, created.id, keys[i])
    finally:
        await db.dispose()


_COUNT_SQL = "SELECT b.name, COUNT(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id GROUP BY b.name"


def count_sqlite(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {str(name): int(n) for name, n in conn.execute(_COUNT_SQL)}
    finally:
        conn.close()


async def count_postgres(url: str) -> dict[str, int]:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        return {str(r[0]): int(r[1]) for r in await conn.fetch(_COUNT_SQL)}
    finally:
        await conn.close()


# ------------------------------------------------------------------------------------------
# Client
# ------------------------------------------------------------------------------------------


def body_for(size: int) -> bytes:
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
    return (line * (size // len(line) + 1))[: max(size, 2)].rstrip(b"\r\n") + b"\r\n"


def build_message(sender: str, rcpt: str, seq: int, tag: str, body: bytes) -> bytes:
    head = (
        f"From: Bench Sender <{sender}>\r\n"
        f"To: <{rcpt}>\r\n"
        f"Subject: OpenMSS benchmark {seq}\r\n"
        f"Date: {email.utils.formatdate(localtime=False)}\r\n"
        f"Message-ID: <{tag}.{seq}@{DOMAIN}>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
    ).encode("ascii")
    return head + body[: max(len(body) - len(head), 2)]


@dataclass
class Window:
    start: float
    warm_end: float
    end: float


@dataclass
class RunStats:
    acked: int = 0  # every 250 to DATA (warm-up and tail included): what the store must hold
    in_window: int = 0
    rejected: int = 0  # 4xx/5xx answers: not stored
    uncertain: int = 0  # DATA sent, no answer (timeout, disconnect): may or may not be stored
    errors: list[str] = field(default_factory=list)
    data_latency: list[float] = field(default_factory=list)  # DATA command -> final 250
    txn_latency: list[float] = field(default_factory=list)  # MAIL -> final 250


async def open_session(port: int, tls: ssl.SSLContext, address: str) -> Any:
    import aiosmtplib

    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=port,
        start_tls=True,
        tls_context=tls,
        local_hostname="client.bench.test",
        timeout=CLIENT_TIMEOUT,
    )
    await client.connect()
    if client.get_transport_info("ssl_object") is None:
        raise RuntimeError("STARTTLS did not happen")
    if client.is_ehlo_or_helo_needed:  # after STARTTLS (RFC 3207 §4.2)
        await client.ehlo()
    await client.auth_plain(address, PASSWORD)
    return client


async def session_loop(
    client: Any, sender: str, rcpt: str, window: Window, body: bytes, stats: RunStats
) -> None:
    import aiosmtplib

    tag = uuid.uuid4().hex[:12]
    clock = time.perf_counter
    for seq in itertools.count():
        if clock() >= window.end:
            break
        message = build_message(sender, rcpt, seq, tag, body)
        t_mail = clock()
        try:
            await client.mail(sender)
            await client.rcpt(rcpt)
        except aiosmtplib.SMTPResponseException as exc:
            stats.rejected += 1
            stats.errors.append(f"{sender}: envelope refused: {exc.code} {exc.message}")
            try:
                await client.rset()
            except aiosmtplib.SMTPException:
                return
            continue
        except aiosmtplib.SMTPException as exc:
            stats.errors.append(f"{sender}: {type(exc).__name__}: {exc}")
            return
        t_data = clock()
        try:
            await client.data(message)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError) as exc:
            stats.uncertain += 1
            stats.errors.append(f"{sender}: no answer to DATA: {type(exc).__name__}: {exc}")
            return
        except aiosmtplib.SMTPResponseException as exc:
            stats.rejected += 1
            stats.errors.append(f"{sender}: DATA refused: {exc.code} {exc.message}")
            if not client.is_connected:
                return
            continue
        done = clock()
        stats.acked += 1
        if window.warm_end <= done < window.end:
            stats.in_window += 1
            stats.data_latency.append(done - t_data)
            stats.txn_latency.append(done - t_mail)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Result:
    server: str
    sessions: int
    seconds: float
    stats: RunStats
    server_cpu: float  # fraction of one core, over the measured window
    client_cpu: float
    db_cpu: float | None = None
    other_cpu: float = 0.0  # every other process on the machine (in cores): noise
    store_ms: float | None = None  # OpenMSS: mean end-of-DATA -> durable commit, server side
    group: float | None = None  # OpenMSS: messages per group handed to the storage worker

    @property
    def rate(self) -> float:
        return self.stats.in_window / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Target:
    name: str
    port: int
    server: ServerProcess
    http_port: int | None = None
    postgres_db: str | None = None  # count the CPU of this database's backends


@dataclass
class Sample:
    at: float
    server: float
    client: float
    db: float
    machine: float
    metrics: dict[str, float]

    @classmethod
    async def take(cls, target: Target) -> Sample:
        metrics: dict[str, float] = {}
        if target.http_port is not None:
            metrics = await asyncio.to_thread(openmss_metrics, target.http_port)
        db = 0.0
        if target.postgres_db:
            db = postgres_cpu_seconds(target.postgres_db)
        return cls(
            at=time.perf_counter(),
            server=process_tree_cpu_seconds(target.server.pid),
            client=time.process_time(),
            db=db,
            machine=machine_busy_seconds(),
            metrics=metrics,
        )


async def run_load(
    target: Target, sessions: int, tls: ssl.SSLContext, seconds: float, warmup: float, size: int
) -> Result:
    stats = RunStats()
    body = body_for(size)
    opened = await asyncio.gather(
        *(open_session(target.port, tls, account(i)) for i in range(sessions)), return_exceptions=True
    )
    clients = [c for c in opened if not isinstance(c, BaseException)]
    failures = [c for c in opened if isinstance(c, BaseException)]
    if failures:
        for client in clients:
            client.close()
        raise RuntimeError(
            f"{target.name}: {len(failures)} of {sessions} sessions could not log in: {failures[0]!r}\n"
            f"{target.server.log_tail()}"
        )
    now = time.perf_counter()
    window = Window(start=now, warm_end=now + warmup, end=now + warmup + seconds)
    tasks = [
        asyncio.create_task(
            session_loop(client, account(i), account((i + 1) % sessions), window, body, stats)
        )
        for i, client in enumerate(clients)
    ]

    await asyncio.sleep(max(0.0, window.warm_end - time.perf_counter()))
    first = await Sample.take(target)
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    last = await Sample.take(target)
    await asyncio.gather(*tasks)
    for client in clients:
        if client.is_connected:
            with contextlib.suppress(Exception):
                await client.quit(timeout=5)
        client.close()

    elapsed = last.at - first.at
    store_ms = group = None
    if first.metrics and last.metrics:
        key = "openmss_store_commit_seconds"
        n = last.metrics[f"{key}_count"] - first.metrics[f"{key}_count"]
        total = last.metrics[f"{key}_sum"] - first.metrics[f"{key}_sum"]
        store_ms = 1000 * total / n if n > 0 else None
        delta = {k: last.metrics[k] - first.metrics[k] for k in last.metrics if k in first.metrics}
        groups = delta["openmss_group_commits_total"]
        group = delta["openmss_group_commit_units_total"] / groups if groups > 0 else None
    ours = (last.server - first.server) + (last.client - first.client) + (last.db - first.db)
    return Result(
        server=target.name,
        sessions=sessions,
        seconds=seconds,
        stats=stats,
        server_cpu=(last.server - first.server) / elapsed,
        client_cpu=(last.client - first.client) / elapsed,
        db_cpu=(last.db - first.db) / elapsed if target.postgres_db else None,
        other_cpu=max(0.0, (last.machine - first.machine) - ours) / elapsed,
        store_ms=store_ms,
        group=group,
    )


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def print_row(r: Result) -> None:
    s = r.stats
    cpu = f"{100 * r.server_cpu:4.0f}%"
    if r.db_cpu is not None:
        cpu += f" +pg {100 * r.db_cpu:3.0f}%"
    store = f"{r.store_ms:7.1f}" if r.store_ms is not None else "      -"
    store += f" {r.group:5.1f}" if r.group is not None else "     -"
    print(
        f"{r.sessions:>4} {r.server:<9} {r.rate:>9.1f} {s.in_window:>7} "
        f"{1000 * percentile(s.data_latency, 0.5):>7.1f} {1000 * percentile(s.data_latency, 0.99):>7.1f} "
        f"{1000 * percentile(s.txn_latency, 0.5):>7.1f} {store} "
        f"{s.rejected + s.uncertain:>5}  {cpu:<14} {100 * r.client_cpu:4.0f}%  {100 * r.other_cpu:4.0f}%",
        flush=True,
    )
    for line in s.errors[:5]:
        print(f"       ! {line}")
    if len(s.errors) > 5:
        print(f"       ! ... and {len(s.errors) - 5} more")


HEADER = (
    "   N server        msg/s   count  DATA50  DATA99  txn p50  store group  errs  server CPU"
    "     client  other\n"
    "                                     (ms)    (ms)     (ms)   (ms)"
)


LEGEND = (
    "\nmsg/s and count: 250 replies within the measured window; DATA50/99: DATA command to final 250;\n"
    "txn p50: MAIL to final 250; store: OpenMSS's own mean end-of-DATA to durable commit (metrics);\n"
    "group: messages per group handed to the storage worker (which may merge several groups);\n"
    "errs: refused or unanswered messages; CPU: share of one core over the window (server process,\n"
    "+pg: that database's backends and WAL writer; client: this process; other: everything else)."
)


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------


def parse_sessions(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("session counts must be >= 1")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="OpenMSS SMTP submission throughput against an aiosmtpd discard baseline"
    )
    p.add_argument("--sessions", type=parse_sessions, default=None, help="comma-separated (default 1,10,50)")
    p.add_argument("--seconds", type=float, default=None, help="measured time per run (default 8)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up per run, not counted (default 1)")
    p.add_argument("--size", type=int, default=2048, help="message size in bytes (default 2048)")
    p.add_argument("--database-url", default="", help="PostgreSQL URL (its public schema is wiped!)")
    p.add_argument("--quick", action="store_true", help="smoke test: N=1,10 for 2 s each")
    p.add_argument("--workdir", type=Path, default=None, help="where the temporary data dir goes")
    p.add_argument("--keep", action="store_true", help="keep the data dir and server logs")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server setting for an experiment (e.g. commit_batch_delay=0); printed with the figures",
    )
    p.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--cert", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--key", type=Path, default=None, help=argparse.SUPPRESS)
    return p


async def bench(args: argparse.Namespace, workdir: Path) -> int:
    from openmss.tls import client_context

    sessions: list[int] = args.sessions or ([1, 10] if args.quick else [1, 10, 50])
    seconds: float = args.seconds if args.seconds is not None else (2.0 if args.quick else 8.0)
    warmup: float = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    database_url: str = args.database_url
    if database_url and not database_url.startswith("postgresql"):
        raise SystemExit("error: --database-url must be a postgresql+asyncpg:// URL (empty means SQLite)")
    data_dir = workdir / "data"

    print(
        f"OpenMSS SMTP benchmark: sessions={','.join(map(str, sessions))} seconds={seconds:g} "
        f"warm-up={warmup:g} size={args.size} B  store={'PostgreSQL' if database_url else 'SQLite'}  "
        f"cores={os.cpu_count()}" + (f"  settings: {' '.join(args.set)}" if args.set else ""),
        flush=True,
    )
    started = time.perf_counter()
    task = asyncio.current_task()
    if task is not None:  # SIGTERM: unwind like Ctrl-C, so that the servers are stopped
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    if database_url:
        await reset_postgres(database_url)
    await create_accounts(data_dir, database_url, max(sessions))

    ports = {name: free_port() for name in ("smtp", "submission", "submissions", "imap", "imaps", "http")}
    servers: list[ServerProcess] = []
    results: list[tuple[Result, Result]] = []
    acked_total = 0
    uncertain_total = 0
    try:
        openmss = ServerProcess(
            "openmss",
            OPENMSS_ARGV,
            openmss_env(data_dir, database_url, ports, args.set),
            workdir / "openmss.log",
        )
        servers.append(openmss)
        await wait_healthz(openmss, ports["http"])
        tls_dir = data_dir / "tls"
        baseline_port = free_port()
        baseline = ServerProcess(
            "baseline",
            [
                sys.executable,
                SCRIPT,
                "--baseline-server",
                "--port",
                str(baseline_port),
                "--cert",
                str(tls_dir / "server.pem"),
                "--key",
                str(tls_dir / "server.key"),
            ],
            {**os.environ, PASSWORD_ENV: PASSWORD},
            workdir / "baseline.log",
        )
        servers.append(baseline)
        await wait_port(baseline, baseline_port)
        tls = client_context(tls_dir / "ca.pem")
        print(f"servers up after {time.perf_counter() - started:.1f} s (accounts, migrations, CA)\n")
        print(HEADER, flush=True)

        om_target = Target(
            "openmss",
            ports["submission"],
            openmss,
            http_port=ports["http"],
            postgres_db=_asyncpg_dsn(database_url).rpartition("/")[2].split("?")[0] if database_url else None,
        )
        bl_target = Target("baseline", baseline_port, baseline)
        for n in sessions:
            base = await run_load(bl_target, n, tls, seconds, warmup, args.size)
            print_row(base)
            mine = await run_load(om_target, n, tls, seconds, warmup, args.size)
            print_row(mine)
            acked_total += mine.stats.acked
            uncertain_total += mine.stats.uncertain
            results.append((mine, base))

        metrics = await asyncio.to_thread(openmss_metrics, ports["http"])
    finally:
        for server in reversed(servers):
            code = server.stop()
            if code not in (0, None, -signal.SIGTERM):
                print(f"  {server.name} exited with {code}; log tail:\n{server.log_tail()}", file=sys.stderr)

    print(LEGEND)
    noisy = [r for pair in results for r in pair if r.other_cpu > 0.25]
    if noisy:
        worst = max(r.other_cpu for r in noisy)
        print(
            f"warning: other processes used up to {100 * worst:.0f}% of a core during {len(noisy)} "
            "run(s): the machine was not idle, figures are noisy"
        )
    print()
    for mine, base in results:
        ratio = mine.rate / base.rate if base.rate > 0 else float("nan")
        print(
            f"N={mine.sessions} openmss={mine.rate:.1f} msg/s "
            f"baseline={base.rate:.1f} msg/s ratio={ratio:.2f}"
        )

    # Store check: every 250 must be durable, as one INBOX copy and one Sent copy.
    if database_url:
        counts = await count_postgres(database_url)
    else:
        counts = count_sqlite(data_dir / "openmss.sqlite3")
    inbox, sent = counts.get("INBOX", 0), counts.get("Sent", 0)
    server_accepted = int(metrics.get("openmss_smtp_messages_accepted_total", -1))
    exact = inbox == sent == acked_total
    plausible = 0 < acked_total <= inbox <= acked_total + uncertain_total and inbox == sent
    verdict = "OK" if exact and acked_total else ("OK (within unanswered DATA)" if plausible else "MISMATCH")
    if not acked_total:
        verdict = "FAILED: no message was accepted (see the server log)"
    print(
        f"\nstore check: client got 250 for {acked_total} messages; "
        f"server counted {server_accepted} accepted; "
        f"store holds INBOX={inbox} Sent={sent} (other mailboxes: "
        f"{sum(v for k, v in counts.items() if k not in ('INBOX', 'Sent'))}) -> {verdict}"
    )
    print(f"total time {time.perf_counter() - started:.1f} s")
    return 0 if plausible else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.baseline_server:
        if not args.port or args.cert is None or args.key is None:
            raise SystemExit("--baseline-server needs --port, --cert and --key")
        return baseline_server(args.port, args.cert, args.key)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="openmss-bench-", dir=args.workdir))
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
