"""Core statements run through the DB-API driver of the caller's connection.

Each ``Connection.execute`` costs SQLAlchemy about a tenth of a millisecond (compiled-cache
lookup, execution context, parameter processing, result set-up): several times what the driver
itself spends on the small ``executemany`` of a delivery. On the storage worker's path, where a
group of messages is a handful of such statements, that overhead was a third of the transaction.

A ``DriverStatement`` is a Core statement compiled once per dialect, with positional parameters
and the column types' own bind processors (so a value is stored exactly as SQLAlchemy would
store it, e.g. a UTC datetime as SQLite's naive text); ``executemany`` hands the rows to the
driver's cursor of the same connection, inside the caller's transaction (and SAVEPOINT).

A ``DriverSelect`` does the same for a SELECT on the IMAP sessions' hot reads (SQLite's inline
reads, ``openmss.db.reads``), its rows read back through the result columns' own types.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import ClauseElement

# Positional styles that both drivers take: sqlite3 "?", psycopg "%s".
_PARAMSTYLE = {"sqlite": "qmark", "postgresql": "format"}


def _compile_positional(statement: ClauseElement, dialect: Dialect, **options: Any) -> SQLCompiler:
    """``statement`` compiled for ``dialect``'s driver with positional parameters."""
    style = _PARAMSTYLE.get(dialect.name)
    if style is None:
        raise NotImplementedError(f"no positional parameter style known for {dialect.name}")
    dialect_class: Any = type(dialect)
    compiled = statement.compile(dialect=dialect_class(paramstyle=style), **options)
    assert isinstance(compiled, SQLCompiler)
    return compiled


@dataclass(frozen=True)
class _Compiled:
    sql: str
    order: tuple[int, ...]  # for each placeholder, the index of its value in a row
    processors: tuple[Callable[[Any], Any] | None, ...]  # per placeholder


class DriverStatement:
    """``statement`` (an INSERT or UPDATE without RETURNING) whose parameters are ``keys``, in
    the order of each row's values."""

    def __init__(self, statement: UpdateBase, keys: Sequence[str]) -> None:
        self._statement = statement
        self._keys = tuple(keys)
        self._compiled: dict[str, _Compiled] = {}

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            result = _compile_positional(self._statement, dialect, column_keys=list(self._keys))
            names = result.positiontup or []
            if "RETURNING" in result.string.upper():
                raise ValueError("a DriverStatement returns nothing: build it with .inline()")
            index = {key: i for i, key in enumerate(self._keys)}
            missing = [name for name in names if name not in index]
            if missing:
                raise ValueError(f"parameters {missing} are not among the row's keys {self._keys}")
            compiled = _Compiled(
                result.string,
                tuple(index[name] for name in names),
                tuple(
                    result.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
                ),
            )
            self._compiled[dialect.name] = compiled
        return compiled

    def executemany(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        compiled = self._compile(conn.dialect)
        pairs = tuple(zip(compiled.order, compiled.processors, strict=True))
        values = [tuple(row[i] if p is None else p(row[i]) for i, p in pairs) for row in rows]
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(compiled.sql, values)
        finally:
            cursor.close()


@dataclass(frozen=True)
class _Query:
    sql: str
    # Per placeholder: the parameter's name, or None and the fixed value the statement holds.
    params: tuple[tuple[str | None, Any], ...]
    binders: tuple[Callable[[Any], Any] | None, ...]
    readers: tuple[Callable[[Any], Any] | None, ...]  # per result column


class DriverSelect:
    """A SELECT on a hot read path (IMAP FETCH): SQLite's inline reads (``openmss.db.reads``)
    run it through the driver, its rows processed by the result columns' own types (a UTC
    datetime, a boolean); elsewhere ``statement`` is executed as usual. Without expanding
    (``IN``) parameters."""

    def __init__(self, statement: Select[*tuple[Any, ...]]) -> None:
        self.statement = statement
        self._compiled: dict[str, _Query] = {}

    def query(self, dialect: Dialect) -> _Query:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            result = _compile_positional(self.statement, dialect)
            names = result.positiontup or []
            binds = [result.binds[name] for name in names]
            if any(bind.expanding for bind in binds):
                raise ValueError("a DriverSelect takes no expanding (IN) parameters")
            compiled = _Query(
                result.string,
                tuple((bind.key, None) if bind.required else (None, bind.value) for bind in binds),
                tuple(bind.type.dialect_impl(dialect).bind_processor(dialect) for bind in binds),
                tuple(
                    column.type.dialect_impl(dialect).result_processor(dialect, None)
                    for column in self.statement.selected_columns
                ),
            )
            self._compiled[dialect.name] = compiled
        return compiled

    def rows(self, conn: Connection, params: Mapping[str, Any] | None) -> list[tuple[Any, ...]]:
        """The rows, in the connection's current transaction."""
        return self.run(conn.connection.driver_connection, conn.dialect, params)

    def run(
        self, driver_connection: Any, dialect: Dialect, params: Mapping[str, Any] | None
    ) -> list[tuple[Any, ...]]:
        """The rows, through a DB-API connection of ``dialect``'s driver, in its current
        transaction."""
        query = self.query(dialect)
        given = params or {}
        values = []
        for (name, fixed), bind in zip(query.params, query.binders, strict=True):
            value = given[name] if name is not None else fixed
            values.append(value if bind is None else bind(value))
        cursor = driver_connection.cursor()
        try:
            cursor.execute(query.sql, values)
            raw = cursor.fetchall()
        finally:
            cursor.close()
        readers = query.readers
        if not any(readers):
            return [tuple(row) for row in raw]
        return [tuple(v if r is None else r(v) for r, v in zip(readers, row, strict=True)) for row in raw]
