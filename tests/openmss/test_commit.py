"""Group commit: concurrent units share one durable commit; a failing unit spoils no other."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openmss import audit
from openmss.audit import AuditEvent
from openmss.db.commit import GroupCommitter
from openmss.db.engine import Database
from openmss.db.migrate import upgrade

from servers import pg_database_url


@pytest.fixture
async def db(tmp_path: Path):
    url = await pg_database_url("commit") or f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite3'}"
    database = Database(url)
    await upgrade(database)
    yield database
    await database.dispose()


async def test_concurrent_units_share_commits(db):
    committer = GroupCommitter(db)
    committer.start()
    try:

        def unit(i: int):
            def work(session: Session) -> int:
                audit.record(session, actor=f"u{i}", action="test")
                return i

            return work

        results = await asyncio.gather(*(committer.run(unit(i)) for i in range(100)))
        assert results == list(range(100))
        assert committer.stats.units == 100
        assert committer.stats.commits < 10  # not one fsync per unit
        async with db.read() as session:
            assert await session.scalar(select(func.count()).select_from(AuditEvent)) == 100
    finally:
        await committer.stop()


async def test_a_failing_unit_is_rolled_back_alone(db):
    committer = GroupCommitter(db)
    committer.start()
    try:

        def good(session: Session) -> str:
            audit.record(session, actor="good", action="test")
            return "ok"

        def bad(session: Session) -> str:
            audit.record(session, actor="bad", action="test")
            session.flush()
            raise RuntimeError("boom")

        results = await asyncio.gather(
            committer.run(good), committer.run(bad), committer.run(good), return_exceptions=True
        )
        assert results[0] == "ok" and results[2] == "ok"
        assert isinstance(results[1], RuntimeError)
        async with db.read() as session:
            actors = sorted(e.actor for e in await session.scalars(select(AuditEvent)))
        assert actors == ["good", "good"]
    finally:
        await committer.stop()


async def test_a_failing_unit_in_a_batch_is_isolated(db):
    """A batch handler that fails for one payload: the others are stored, that one is refused."""
    committer = GroupCommitter(db)
    committer.start()
    try:

        def store_all(session: Session, actors: list[str]) -> list[str]:
            for actor in actors:
                if actor == "poison":
                    raise ValueError("bad payload")
                audit.record(session, actor=actor, action="batch")
            return actors

        results = await asyncio.gather(
            *(committer.run_batched(store_all, a) for a in ["a", "b", "poison", "c"]), return_exceptions=True
        )
        assert results[:2] == ["a", "b"] and results[3] == "c"
        assert isinstance(results[2], ValueError)
        assert committer.stats.commits == 1  # one durable commit for the whole group
        async with db.read() as session:
            actors = sorted(e.actor for e in await session.scalars(select(AuditEvent)))
        assert actors == ["a", "b", "c"]
    finally:
        await committer.stop()
