"""Short reads with SQLAlchemy Core, for the hot paths of the mail sessions (IMAP).

An ORM ``AsyncSession`` costs about 0.6 ms per use on this project's reference machine before
any query runs (greenlet switches, the async pool, session bookkeeping), more than the indexed
queries an IMAP command makes. ``Reads`` is the small interface those paths use instead: Core
statements in, rows out, several statements in one read transaction (one snapshot).

* SQLite: a synchronous sqlite3 connection used on the event loop itself. In WAL mode a reader
  never waits for a writer, so a read is CPU work of tens of microseconds, less than handing it
  to a thread. ``DriverSelect`` statements go straight to the driver; other Core statements
  through SQLAlchemy on the same connection, in the same transaction.
* PostgreSQL: an ``AsyncConnection`` (asyncpg has no thread to hop to).
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from sqlalchemy import Connection, create_engine
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import Executable

from openmss.db.driver import DriverSelect


class Reads(Protocol):
    """Build statements once, with ``bindparam`` placeholders, and pass the values as
    ``params``: building a ``select()`` costs several times more than running it."""

    async def rows(
        self, statement: Executable | DriverSelect, params: Mapping[str, Any] | None = None
    ) -> Sequence[Any]: ...

    async def scalar(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Any: ...


class _InlineReads:
    """One read block on one of the inline pool's connections: BEGIN before its first
    statement (one snapshot for all), ROLLBACK at the end (``ReadEngine.reads``)."""

    def __init__(self, conn: _InlineConnection) -> None:
        self._conn = conn
        self._raw = conn.raw
        self.begun = False
        self._core: Connection | None = None

    async def rows(
        self, statement: Executable | DriverSelect, params: Mapping[str, Any] | None = None
    ) -> Sequence[Any]:
        if not self.begun:
            self._begin()
        if isinstance(statement, DriverSelect):
            return statement.run(self._raw, self._conn.dialect, params)
        return self._core_connection().execute(statement, params).all()

    async def scalar(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Any:
        if not self.begun:
            self._begin()
        return self._core_connection().execute(statement, params).scalar()

    def _begin(self) -> None:
        self._raw.execute("BEGIN")
        self.begun = True

    def _core_connection(self) -> Connection:
        # Other Core statements go through SQLAlchemy, on the same sqlite3 connection (and
        # so in the same transaction): SQLAlchemy's BEGIN is a no-op with this driver setting.
        if self._core is None:
            self._core = self._conn.engine.connect()
        return self._core

    def close(self) -> None:
        if self._core is not None:
            self._core.close()  # no reset on return: the ROLLBACK below ends the snapshot
            self._core = None
        if self._raw.in_transaction:  # closing SQLAlchemy's connection may have rolled back
            self._raw.execute("ROLLBACK")
        self.begun = False


class _AsyncReads:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def rows(
        self, statement: Executable | DriverSelect, params: Mapping[str, Any] | None = None
    ) -> Sequence[Any]:
        if isinstance(statement, DriverSelect):
            statement = statement.statement
        return (await self._conn.execute(statement, params)).all()

    async def scalar(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Any:
        return (await self._conn.execute(statement, params)).scalar()


class ReadEngine:
    """Where ``Database.reads()`` gets its connections."""

    def __init__(self, url: str, engine: AsyncEngine) -> None:
        self._async = engine
        self._inline: _InlinePool | None = None
        path = make_url(url).database
        if url.startswith("sqlite") and path not in (None, "", ":memory:"):
            self._inline = _InlinePool(str(path))

    def reads(self) -> AbstractAsyncContextManager[Reads]:
        if self._inline is not None:
            return _InlineBlock(self._inline)
        return self._async_reads()

    @asynccontextmanager
    async def _async_reads(self) -> AsyncIterator[Reads]:
        async with self._async.connect() as aconn, aconn.begin():
            yield _AsyncReads(aconn)

    def dispose(self) -> None:
        if self._inline is not None:
            self._inline.dispose()


class _InlineBlock:
    """``async with``: a connection from the pool for one read block, given back at its end
    (a class rather than a generator-based context manager: one per IMAP command)."""

    def __init__(self, pool: _InlinePool) -> None:
        self._pool = pool
        self._conn: _InlineConnection | None = None
        self._block: _InlineReads | None = None

    async def __aenter__(self) -> _InlineReads:
        self._conn = self._pool.take()
        self._block = _InlineReads(self._conn)
        return self._block

    async def __aexit__(self, *exc: object) -> None:
        assert self._conn is not None and self._block is not None
        conn, block = self._conn, self._block
        self._conn = self._block = None
        try:
            block.close()
        except BaseException:
            conn.close()  # in an unknown state: never handed out again
            raise
        self._pool.give(conn)


class _InlineConnection:
    """A read-only sqlite3 connection, and a SQLAlchemy engine whose one connection is this
    one, for the Core statements that are not ``DriverSelect``s."""

    def __init__(self, path: str, dialect: Dialect) -> None:
        self.path = path
        self.dialect = dialect
        # isolation_level=None: the driver never BEGINs on its own; ``_InlineReads`` does.
        self.raw = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.raw.execute("PRAGMA busy_timeout=30000")
        self.raw.execute("PRAGMA query_only=ON")
        raw = self.raw
        self.engine = create_engine(
            f"sqlite+pysqlite:///{path}",
            creator=lambda: raw,
            poolclass=StaticPool,
            pool_reset_on_return=None,
        )
        # SQLAlchemy's first checkout inspects the connection and rolls back: done here, out of
        # any read block, so that it never ends a block's snapshot.
        self.engine.connect().close()

    def close(self) -> None:
        self.engine.dispose()
        self.raw.close()


class _InlinePool:
    """Connections for the inline reads, without SQLAlchemy's pool: a checkout is a
    ``deque.pop`` (SQLAlchemy's checkout, events and reset cost ~50 µs a read block, more than
    the indexed queries of an IMAP FETCH). It never blocks: a checkout that waited on the event
    loop's own thread would never be served; beyond ``keep`` idle connections, a returned one
    is closed."""

    def __init__(self, path: str, keep: int = 5) -> None:
        self._path = path
        self._keep = keep
        self._idle: deque[_InlineConnection] = deque()
        self._dialect = SQLiteDialect_pysqlite(paramstyle="qmark")

    def take(self) -> _InlineConnection:
        try:
            return self._idle.pop()
        except IndexError:
            return _InlineConnection(self._path, self._dialect)

    def give(self, conn: _InlineConnection) -> None:
        if len(self._idle) < self._keep:
            self._idle.append(conn)
        else:
            conn.close()

    def dispose(self) -> None:
        while self._idle:
            self._idle.pop().close()
