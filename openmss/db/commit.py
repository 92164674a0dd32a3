"""Group commit: many concurrent writers share one durable commit.

Every SMTP session that receives a message must not answer 250 before the message is durably
committed. A commit costs an fsync, and every statement costs a round trip through the driver;
with dozens of sessions, paying both per message caps the throughput. ``GroupCommitter`` runs one
writer task that takes every unit of work waiting in its queue and commits them together:

* a *batch* unit (``run_batched``) names a handler that stores many payloads at once; all waiting
  payloads of one handler go to a single call, so a group of messages costs a constant number of
  statements whatever its size;
* a plain unit (``run``) is a callable run on its own.

Each call runs inside its own SAVEPOINT. If a batch call fails, its payloads are retried one by
one, each in its own SAVEPOINT, so that one bad unit spoils no other. The transaction is then
committed once, and only after the commit returned is any caller answered.

Units are synchronous functions of a synchronous ``Session``: the whole group runs in one
dedicated writer thread, one hop away from the event loop, instead of one hop per statement.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from openmss.db.engine import Database

T = TypeVar("T")
P = TypeVar("P")
BatchHandler = Callable[[Session, Sequence[Any]], Sequence[Any]]

log = logging.getLogger(__name__)


@dataclass
class _Item:
    handler: BatchHandler
    payload: Any
    future: asyncio.Future[Any]
    weight: int


@dataclass
class CommitStats:
    commits: int = 0
    units: int = 0
    failures: int = 0
    largest_batch: int = 0


def _single(session: Session, works: Sequence[Callable[[Session], Any]]) -> list[Any]:
    return [work(session) for work in works]


class GroupCommitter:
    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = 256,
        max_batch_bytes: int = 64 * 1024 * 1024,
        batch_delay: float = 0.0,
        on_commit: Callable[[int], None] = lambda units: None,
    ) -> None:
        self._db = db
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._max_batch = max_batch
        self._max_bytes = max_batch_bytes
        self._delay = batch_delay
        self._on_commit = on_commit
        self._task: asyncio.Task[None] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self.stats = CommitStats()

    def start(self) -> None:
        if self._task is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="openmss-writer")
            self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(RuntimeError("server is stopping"))
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None

    async def run(self, work: Callable[[Session], T], *, weight: int = 0) -> T:
        """Run ``work`` in the next group transaction; return once it is durably committed."""
        result: T = await self.run_batched(_single, work, weight=weight)
        return result

    async def run_batched(
        self,
        handler: Callable[[Session, Sequence[P]], Sequence[T]],
        payload: P,
        *,
        weight: int = 0,
    ) -> T:
        """Give ``payload`` to ``handler`` together with every other waiting payload of the same
        handler; ``handler`` returns one result per payload, in order. Returns this payload's
        result once it is durably committed."""
        if self._task is None:
            raise RuntimeError("GroupCommitter is not started")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(handler, payload, future, weight))
        return await future

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if self._delay:
                await asyncio.sleep(self._delay)
            batch = [first]
            size = first.weight
            while len(batch) < self._max_batch and size < self._max_bytes and not self._queue.empty():
                item = self._queue.get_nowait()
                batch.append(item)
                size += item.weight
            await self._commit(batch)

    def _call(self, session: Session, items: list[_Item]) -> list[tuple[_Item, bool, Any]]:
        handler = items[0].handler
        try:
            with session.begin_nested():
                values = handler(session, [item.payload for item in items])
            if len(values) != len(items):
                raise RuntimeError(f"{handler!r} returned {len(values)} results for {len(items)} payloads")
            return [(item, True, value) for item, value in zip(items, values, strict=True)]
        except Exception as exc:
            if len(items) == 1:
                return [(items[0], False, exc)]
        # Find the culprit: one SAVEPOINT per payload.
        results: list[tuple[_Item, bool, Any]] = []
        for item in items:
            results.extend(self._call(session, [item]))
        return results

    def _transaction(self, groups: list[list[_Item]]) -> list[tuple[_Item, bool, Any]]:
        """In the writer thread: every group in one transaction, committed once."""
        results: list[tuple[_Item, bool, Any]] = []
        with self._db.sync_transaction() as session:
            for items in groups:
                results.extend(self._call(session, items))
        return results

    async def _commit(self, batch: list[_Item]) -> None:
        live = [item for item in batch if not item.future.cancelled()]
        groups: dict[tuple[str, object], list[_Item]] = {}
        for item in live:
            # Plain units each get their own call; batch units are grouped by handler (a bound
            # method is a new object at every access, but compares and hashes equal).
            key = ("plain", id(item)) if item.handler is _single else ("batch", item.handler)
            groups.setdefault(key, []).append(item)
        assert self._thread is not None
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._thread, self._transaction, list(groups.values())
            )
        except Exception as exc:
            log.error("group commit failed", extra={"units": len(live), "error": repr(exc)})
            self.stats.failures += 1
            for item in live:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self.stats.commits += 1
        self.stats.units += len(live)
        self.stats.largest_batch = max(self.stats.largest_batch, len(live))
        self._on_commit(len(live))
        for item, ok, value in results:
            if item.future.done():
                continue
            if ok:
                item.future.set_result(value)
            else:
                item.future.set_exception(value)
