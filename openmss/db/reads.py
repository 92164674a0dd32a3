"""Short reads with SQLAlchemy Core, for the hot paths of the mail sessions (IMAP).

An ORM ``AsyncSession`` costs about 0.6 ms per use on this project's reference machine before
any query runs (greenlet switches, the async pool, session bookkeeping), more than the indexed
queries an IMAP command makes. ``Reads`` is the small interface those paths use instead: Core
statements in, rows out, several statements in one read transaction (one snapshot).

* SQLite: a synchronous connection used on the event loop itself (~0.1 ms a statement). In WAL
  mode a reader never waits for a writer, so a read is CPU work of tens of microseconds, less
  than handing it to a thread. The pool never blocks (unbounded overflow): a checkout that
  waited on the event loop's own thread would never be served.
* PostgreSQL: an ``AsyncConnection`` (asyncpg has no thread to hop to).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import QueuePool
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
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def rows(
        self, statement: Executable | DriverSelect, params: Mapping[str, Any] | None = None
    ) -> Sequence[Any]:
        if isinstance(statement, DriverSelect):
            if not self._conn.in_transaction():
                self._conn.begin()  # one snapshot for every statement of this block
            return statement.rows(self._conn, params)
        return self._conn.execute(statement, params).all()

    async def scalar(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Any:
        return self._conn.execute(statement, params).scalar()


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
        self._inline: Engine | None = None
        path = make_url(url).database
        if url.startswith("sqlite") and path not in (None, "", ":memory:"):
            self._inline = _inline_engine(str(path))

    @asynccontextmanager
    async def reads(self) -> AsyncIterator[Reads]:
        if self._inline is not None:
            with self._inline_connection() as conn:
                yield _InlineReads(conn)
            return
        async with self._async.connect() as aconn, aconn.begin():
            yield _AsyncReads(aconn)

    @contextmanager
    def _inline_connection(self) -> Iterator[Connection]:
        assert self._inline is not None
        with self._inline.connect() as conn:
            try:
                yield conn
            finally:
                conn.rollback()  # a read: nothing to keep; ends the snapshot

    def dispose(self) -> None:
        if self._inline is not None:
            self._inline.dispose()


def _inline_engine(path: str) -> Engine:
    engine = create_engine(
        f"sqlite+pysqlite:///{path}",
        poolclass=QueuePool,
        pool_size=5,
        max_overflow=-1,
        # Every read block ends with its own rollback (``_inline_connection``): no second one
        # when the connection goes back to the pool.
        pool_reset_on_return=None,
        connect_args={"timeout": 30, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy says BEGIN itself, below
        dbapi_connection.execute("PRAGMA busy_timeout=30000")
        dbapi_connection.execute("PRAGMA query_only=ON")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Straight to the driver: a SQLAlchemy execution costs more than the BEGIN itself, and
        # every IMAP command's read block starts with one.
        conn.connection.driver_connection.execute("BEGIN")  # type: ignore[union-attr]

    return engine
