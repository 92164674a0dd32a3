"""Start real OpenMSS runtimes on free loopback ports for the tests."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import shutil
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from mailserver.store.reader import MessageReader
from openmss.db.engine import Database
from openmss.db.migrate import upgrade
from openmss.runtime import Runtime
from openmss.settings import Settings
from openmss.tls import create_ca, issue_certificate

PG_ENV = "OPENMSS_TEST_DATABASE_URL"


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A port free now, for a server to bind a moment later. Chosen below the kernel's
    ephemeral range: a port from that range (what binding port 0 gives) can be taken meanwhile
    by any client socket of any test running beside this one (pytest-xdist); one below it only
    by another free_port() that drew the same number."""
    low, high = _ephemeral_range()
    top = low - 1 if low > 12000 else 65535
    bottom = 10000 if low > 12000 else high + 1
    for _ in range(100):
        port = random.SystemRandom().randint(bottom, top)  # unaffected by tests seeding random
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # crowded: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_tls_cache(folder: Path) -> Path:
    """Three CAs (a, b, c), each with a server certificate for its instance."""
    for name in ("a", "b", "c"):
        d = folder / name
        d.mkdir()
        create_ca(d / "ca.pem", d / "ca.key", f"Test CA {name}")
        issue_certificate(
            d / "ca.pem",
            d / "ca.key",
            d / "server.pem",
            d / "server.key",
            common_name=f"mx.{name}.test",
            organization=f"Operator {name.upper()}",
        )
    return folder


async def pg_database_url(name: str) -> str | None:
    """A freshly emptied PostgreSQL database for this test, or None to use SQLite."""
    base = os.environ.get(PG_ENV)
    if not base:
        return None
    raw = base.replace("postgresql+asyncpg://", "postgresql://")
    # One database per test name and per pytest-xdist worker: workers run side by side.
    dbname = f"openmss_t_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{name}"
    conn = await asyncpg.connect(raw)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname=$1", dbname)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        await conn.close()
    target = raw.rsplit("/", 1)[0] + "/" + dbname
    conn = await asyncpg.connect(target)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()
    return target.replace("postgresql://", "postgresql+asyncpg://", 1)


@contextlib.asynccontextmanager
async def migrated_database(name: str, folder: Path) -> AsyncIterator[Database]:
    """A migrated, empty database for a test: PostgreSQL's ``name`` when the suite runs on it,
    else SQLite in ``folder``; disposed of afterwards."""
    url = await pg_database_url(name) or f"sqlite+aiosqlite:///{folder / (name + '.sqlite3')}"
    database = Database(url)
    await upgrade(database)
    try:
        yield database
    finally:
        await database.dispose()


@dataclass
class Instance:
    name: str
    domain: str
    settings: Settings
    runtime: Runtime
    tls_dir: Path
    passwords: dict[str, str] = field(default_factory=dict)
    _readers: dict[str, MessageReader] = field(default_factory=dict)

    @property
    def ca(self) -> Path:
        return self.tls_dir / "ca.pem"

    def client_tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        return ctx

    @property
    def http_base(self) -> str:
        return f"https://127.0.0.1:{self.settings.http_port}"

    async def add_account(self, local: str, password: str = "correct horse battery") -> str:
        """An account created as the CLI and the API create them: with a server-held key."""
        address = f"{local}@{self.domain}"
        await self.runtime.accounts.create(address, password, actor="test")
        self.passwords[address] = password
        return address

    async def reader(self, address: str) -> MessageReader:
        """What a logged-in session reads through: the account unlocked with its password."""
        reader = self._readers.get(address)
        if reader is None:
            chain = await self.runtime.accounts.unlock_address(address, self.passwords[address])
            reader = self._readers[address] = MessageReader(self.runtime.store, chain)
        return reader

    async def messages(self, address: str, mailbox: str = "INBOX") -> list[bytes]:
        """The messages of a mailbox as its owner reads them (decrypted)."""
        reader = await self.reader(address)
        return [m for _, m in await self.stored_and_read(address, mailbox, reader)]

    async def stored(self, address: str, mailbox: str = "INBOX") -> list[bytes]:
        """The messages of a mailbox as the database holds them (encrypted)."""
        return [s for s, _ in await self.stored_and_read(address, mailbox, None)]

    async def stored_and_read(
        self, address: str, mailbox: str, reader: MessageReader | None
    ) -> list[tuple[bytes, bytes]]:
        store = self.runtime.store
        async with self.runtime.db.read() as session:
            account = await store.account_by_address(session, address)
            assert account is not None
            box = await store.mailbox(session, account.id, mailbox)
            found = []
            for m in await store.messages(session, box.id):
                raw = await store.read(session, m)
                found.append((raw, await reader.read(session, m) if reader else raw))
            return found

    async def wait_for_messages(
        self, address: str, count: int, mailbox: str = "INBOX", timeout: float = 10.0
    ) -> list[bytes]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = await self.messages(address, mailbox)
            if len(found) >= count or loop.time() > deadline:
                return found
            await asyncio.sleep(0.05)


class ServerFactory:
    def __init__(self, tmp: Path, tls_cache: Path) -> None:
        self.tmp = tmp
        self.tls_cache = tls_cache
        self.instances: list[Instance] = []
        self._passwords: dict[str, dict[str, str]] = {}

    async def settings_for(self, name: str, **overrides: Any) -> Settings:
        data = self.tmp / f"data-{name}"
        tls_dir = data / "tls"
        if not tls_dir.exists():
            shutil.copytree(self.tls_cache / name, tls_dir)
        # A restart passes its database_url: keep that data; otherwise a fresh database.
        url = overrides.get("database_url") or await pg_database_url(name)
        values: dict[str, Any] = dict(
            data_dir=data,
            database_url=url or "",
            domains=[f"{name}.test"],
            hostname=f"mx.{name}.test",
            smtp_port=free_port(),
            submission_port=free_port(),
            submissions_port=free_port(),
            imap_port=free_port(),
            imaps_port=free_port(),
            http_port=free_port(),
            tls_cert=tls_dir / "server.pem",
            tls_key=tls_dir / "server.key",
            peer_ca_file=tls_dir / "ca.pem",
            login_failure_delay=0.01,
            queue_poll_seconds=0.2,
            # Cheap argon2id for the keys of test accounts (the defaults cost ~0.1 s per use).
            key_kdf_memory_kib=1024,
            key_kdf_time_cost=1,
            key_kdf_parallelism=1,
            log_format="text",
        )
        values.update(overrides)
        return Settings(**values)

    async def start(self, name: str, **overrides: Any) -> Instance:
        settings = await self.settings_for(name, **overrides)
        runtime = Runtime(settings)
        for attempt in range(3):
            try:
                await runtime.start()
                break
            except OSError as exc:
                # free_port() closes the port it found: a client socket of another test may take it
                # before the server binds. Pick new ports (those the caller did not choose).
                if exc.errno != errno.EADDRINUSE or attempt == 2:
                    raise
                fresh = {
                    port: free_port()
                    for port in (
                        "smtp_port",
                        "submission_port",
                        "submissions_port",
                        "imap_port",
                        "imaps_port",
                        "http_port",
                    )
                    if port not in overrides
                }
                settings = settings.model_copy(update=fresh)
                runtime = Runtime(settings)
        instance = Instance(name, settings.domains[0], settings, runtime, settings.data_dir / "tls")
        # A restarted instance keeps its accounts: and their passwords, to read their mail.
        instance.passwords = self._passwords.setdefault(name, {})
        self.instances.append(instance)
        return instance

    async def stop(self, instance: Instance) -> None:
        await instance.runtime.stop()
        self.instances.remove(instance)

    async def close(self) -> None:
        for instance in list(self.instances):
            await instance.runtime.stop()
        self.instances.clear()
