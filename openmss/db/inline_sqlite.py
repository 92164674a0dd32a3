"""An aiosqlite look-alike that runs each SQLite call at once, on the calling thread.

aiosqlite runs every call (cursor, execute, fetch, close, BEGIN, ROLLBACK…) on a thread of its
own and hands the result back through the event loop: two thread switches per call, about
ten calls for one read through an ORM session. On this machine that made a read session of two
indexed queries cost ~3 ms where the queries themselves take ~30 µs; IMAP commands, which are
mostly such reads, were bound by it (bench/imap.py).

SQLite in WAL mode never makes a reader wait for a writer, so a read is CPU work of a few tens
of microseconds: cheaper to do on the event loop than to hand to a thread. The read engine of
``openmss.db.engine.Database`` (SQLite only) uses this module through SQLAlchemy's
``async_creator``; the write engine keeps aiosqlite, since a commit waits for fsync. A read
that would block (SQLITE_BUSY during WAL recovery, rare) waits at most ``busy_timeout``.

Only what SQLAlchemy's aiosqlite dialect calls is here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any


class Cursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> Cursor:
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> Cursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    def __aiter__(self) -> Cursor:
        return self

    async def __anext__(self) -> Any:
        row = self._cursor.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row


class _Immediate:
    """Stands in for aiosqlite's work queue: SQLAlchemy puts (future, function) on it to set the
    isolation level; the function runs at once."""

    def put_nowait(self, item: tuple[Any, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:  # handed to the awaiting side, as aiosqlite does
            future.set_exception(exc)
        else:
            future.set_result(result)


class Connection:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._connection: sqlite3.Connection | None = conn  # SQLAlchemy checks it is open
        self._tx = _Immediate()

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> Cursor:
        return Cursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> Cursor:
        return Cursor(self._conn.execute(sql, parameters))

    async def create_function(self, *args: Any, **kw: Any) -> None:
        self._conn.create_function(*args, **kw)

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()


def connector(path: str, *, timeout: float = 30.0) -> Callable[[], Any]:
    """SQLAlchemy's ``async_creator`` for the database file at ``path``."""

    async def connect() -> Connection:
        # check_same_thread=False: SQLAlchemy may close a pooled connection from the thread that
        # garbage-collects it; every other use is on the event loop's thread.
        return Connection(sqlite3.connect(path, timeout=timeout, check_same_thread=False))

    return connect
