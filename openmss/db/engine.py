"""Engines and sessions for SQLite (embedded default) and PostgreSQL.

Two sides:

* the event loop reads (and does rare writes) through async engines: aiosqlite, asyncpg;
* the writer thread (``openmss.db.commit``) writes the hot path through a synchronous engine:
  pysqlite, psycopg. One batch of messages is then one hop between threads instead of one per
  statement (an aiosqlite round trip costs about 0.3 ms of CPU in thread wake-ups).

SQLite runs in WAL mode with ``synchronous=FULL``: a commit returns only once the WAL is
fsynced, so a message acknowledged with 250 survives a crash or power loss. Every SQLite writer
starts its transactions with ``BEGIN IMMEDIATE``, so two writers never deadlock on a lock
upgrade; readers use deferred transactions and never block the writer (WAL).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import AsyncAdaptedQueuePool, QueuePool

from openmss.db import inline_sqlite
from openmss.db.reads import ReadEngine, Reads


def _sqlite_pragmas(dbapi_connection: Any) -> None:
    # Let SQLAlchemy emit BEGIN itself (pysqlite's implicit transactions break SAVEPOINT); see
    # SQLAlchemy's "Serializable isolation / Savepoints" notes for SQLite.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def sync_url(url: str) -> str:
    """The synchronous driver's URL for the same database."""
    for async_driver, sync_driver in (
        ("sqlite+aiosqlite", "sqlite+pysqlite"),
        ("postgresql+asyncpg", "postgresql+psycopg"),
    ):
        if url.startswith(async_driver + "://"):
            return sync_driver + url[len(async_driver) :]
    return url


def _sync_writer_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            sync_url(url),
            poolclass=QueuePool,
            pool_size=1,
            max_overflow=0,
            connect_args={"timeout": 30, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            _sqlite_pragmas(dbapi_connection)

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # A connection may ask for a deferred transaction (``sqlite_begin="BEGIN"``): one
            # that only writes TEMP tables, such as the directory import's staging, and must
            # not hold the database's write lock meanwhile.
            conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN IMMEDIATE"))

        return engine
    return create_engine(sync_url(url), pool_size=1, max_overflow=1, pool_pre_ping=True)


def _sqlite_engine(url: str, *, writer: bool) -> AsyncEngine:
    path = make_url(url).database
    inline = not writer and path not in (None, "", ":memory:")
    engine = create_async_engine(
        url,
        poolclass=AsyncAdaptedQueuePool,
        pool_size=1 if writer else 5,
        max_overflow=0 if writer else 10,
        connect_args={"timeout": 30},
        # Reads run on the event loop (see inline_sqlite); the writer keeps aiosqlite's thread.
        **({"async_creator": inline_sqlite.connector(str(path), timeout=30)} if inline else {}),
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        _sqlite_pragmas(dbapi_connection)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


class Database:
    """The application's database: a read engine and a write engine (the same on PostgreSQL)."""

    def __init__(self, url: str, *, pool_size: int = 20) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = _sqlite_engine(url, writer=False)
            self.write_engine = _sqlite_engine(url, writer=True)
        else:
            self.engine = create_async_engine(url, pool_size=pool_size, max_overflow=10, pool_pre_ping=True)
            self.write_engine = self.engine
        self._read = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self._sync_engine: Engine | None = None
        self._sync_sessions: sessionmaker[Session] | None = None
        self._reads = ReadEngine(url, self.engine)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reading; nothing it does is committed."""
        async with self._read() as session:
            yield session

    def reads(self) -> AbstractAsyncContextManager[Reads]:
        """Core statements in one read transaction, at the least cost (see ``reads``): what the
        mail sessions' hot paths use."""
        return self._reads.reads()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A write transaction, committed (durably) when the block ends without error."""
        async with self._write() as session, session.begin():
            yield session

    def sync_engine(self) -> Engine:
        """The synchronous writer engine (the writer thread, the CLI)."""
        if self._sync_engine is None:
            self._sync_engine = _sync_writer_engine(self.url)
        return self._sync_engine

    @contextmanager
    def sync_transaction(self) -> Iterator[Session]:
        """A synchronous write transaction (the writer thread, the CLI), committed at the end."""
        if self._sync_sessions is None:
            self._sync_sessions = sessionmaker(self.sync_engine(), expire_on_commit=False)
        with self._sync_sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        self._reads.dispose()
        await self.engine.dispose()
        if self.write_engine is not self.engine:
            await self.write_engine.dispose()
        if self._sync_engine is not None:
            self._sync_engine.dispose()
