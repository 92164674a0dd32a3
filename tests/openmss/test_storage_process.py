"""The storage worker process: batches through a real child process, its death, its stop."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from openmss.db.commit import GroupCommitter, ProcessBackend, StorageProcessDied
from openmss.db.engine import Database
from openmss.db.migrate import upgrade

from servers import pg_database_url


@pytest.fixture
async def url(tmp_path: Path) -> str:
    url = await pg_database_url("storage") or f"sqlite+aiosqlite:///{tmp_path / 's.sqlite3'}"
    db = Database(url)
    await upgrade(db)
    await db.dispose()
    return url


async def test_batches_are_stored_by_the_child_and_a_dead_child_is_replaced(url):
    backend = ProcessBackend("tests.support.storage_factory:handlers", {"url": url})
    committer = GroupCommitter(backend)
    committer.start()
    try:
        results = await asyncio.gather(*(committer.run_batched("audit", f"actor{i}") for i in range(20)))
        child = results[0]
        assert child != os.getpid() and all(r == child for r in results)
        failed = await asyncio.gather(committer.run_batched("audit", "poison"), return_exceptions=True)
        assert isinstance(failed[0], ValueError)  # a failing payload fails alone, with its error
        # An error that cannot be pickled comes back as a RuntimeError naming it; the payloads
        # answered with it still get their own results.
        mixed = await asyncio.gather(
            committer.run_batched("audit", "unpicklable"),
            committer.run_batched("audit", "neighbour"),
            return_exceptions=True,
        )
        assert isinstance(mixed[0], RuntimeError) and "_Unpicklable" in str(mixed[0])
        assert mixed[1] == child

        os.kill(child, signal.SIGKILL)
        with pytest.raises(StorageProcessDied):
            await committer.run_batched("audit", "lost")
        again = await committer.run_batched("audit", "after")  # a new worker took over
        assert again != child
    finally:
        await committer.stop()
    db = Database(url)
    try:
        from sqlalchemy import select

        from openmss.audit import AuditEvent

        async with db.read() as session:
            actors = sorted(e.actor for e in await session.scalars(select(AuditEvent)))
    finally:
        await db.dispose()
    assert actors == sorted([f"actor{i}" for i in range(20)] + ["neighbour", "after"])


async def test_large_and_small_requests_in_flight_never_interleave(url):
    """A request over the direct-send size goes through the helper thread; the small ones sent
    meanwhile must queue behind it, or the pipe's byte stream would be corrupted."""
    backend = ProcessBackend("tests.support.storage_factory:handlers", {"url": url})
    # Groups of at most 1 MiB of payload: the large one travels alone, the small ones in the
    # groups after it, while it is still being written.
    committer = GroupCommitter(backend, in_flight=4, max_batch_bytes=1 << 20, max_batch=5)
    committer.start()
    try:
        big = "big-" + "x" * (3 << 20)  # over ProcessBackend._DIRECT_SEND
        results = await asyncio.gather(
            committer.run_batched("audit", big, weight=len(big)),
            *(committer.run_batched("audit", f"small{i}", weight=10) for i in range(30)),
        )
        assert committer.stats.commits >= 4  # several groups really were in flight
        assert len(results) == 31 and len(set(results)) == 1  # all stored by the same worker
    finally:
        await committer.stop()
