"""Shared fixtures: a real OpenMSS server on loopback, on SQLite or on PostgreSQL.

Set OPENMSS_TEST_DATABASE_URL (e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test) to run
the suite on PostgreSQL; each test gets freshly emptied databases.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "support"))

from openmss.db.engine import Database

from servers import ServerFactory, make_tls_cache, migrated_database


@pytest.fixture(scope="session")
def tls_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and certificates made once per run (RSA key generation is slow)."""
    return make_tls_cache(tmp_path_factory.mktemp("tls-cache"))


@pytest.fixture
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated, empty database (PostgreSQL's when the suite runs on it), named after the test
    module; a module may define its own ``db`` instead."""
    name = request.module.__name__.rpartition(".")[2].removeprefix("test_")
    async with migrated_database(name, tmp_path) as database:
        yield database


@pytest.fixture
async def servers(tmp_path: Path, tls_cache: Path) -> AsyncIterator[ServerFactory]:
    factory = ServerFactory(tmp_path, tls_cache)
    try:
        yield factory
    finally:
        await factory.close()


@pytest.fixture
async def server(servers: ServerFactory):  # type: ignore[no-untyped-def]
    return await servers.start("a")


@pytest.fixture
def swaks() -> Iterator[str]:
    path = shutil.which("swaks")
    if path is None:
        pytest.skip("swaks is not installed (make test installs it when run as root)")
    yield path


@pytest.fixture(autouse=True)
def _stop_gpg_agents(tmp_path: Path) -> Iterator[None]:
    """GnuPG starts an agent per home directory; stop those the test made (tests/support/gnupg.py
    puts them under tmp_path)."""
    yield
    gpgconf = shutil.which("gpgconf")
    if gpgconf is None:
        return
    for home in tmp_path.rglob("gnupg*"):
        if home.is_dir() and (home / "pubring.kbx").exists():
            subprocess.run(
                [gpgconf, "--homedir", str(home), "--kill", "all"], capture_output=True, timeout=10
            )
