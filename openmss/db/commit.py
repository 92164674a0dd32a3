"""Group commit: many concurrent writers share one durable commit.

Every SMTP session that receives a message must not answer 250 before the message is durably
committed. A commit costs an fsync; with dozens of sessions, paying one fsync each caps the
throughput at the disk's fsync rate. ``GroupCommitter`` runs one writer task: it takes every
unit of work waiting in its queue, runs each inside its own SAVEPOINT of a single transaction
(so one failing unit does not spoil the others), commits once, then answers every caller.
A caller's future is resolved only after the commit returned, never before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from openmss.db.engine import Database

T = TypeVar("T")
Work = Callable[[AsyncSession], Awaitable[Any]]

log = logging.getLogger(__name__)


@dataclass
class _Item:
    work: Work
    future: asyncio.Future[Any]
    weight: int


@dataclass
class CommitStats:
    commits: int = 0
    units: int = 0
    failures: int = 0
    largest_batch: int = 0


class GroupCommitter:
    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = 256,
        max_batch_bytes: int = 64 * 1024 * 1024,
        batch_delay: float = 0.0,
    ) -> None:
        self._db = db
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._max_batch = max_batch
        self._max_bytes = max_batch_bytes
        self._delay = batch_delay
        self._task: asyncio.Task[None] | None = None
        self.stats = CommitStats()

    def start(self) -> None:
        if self._task is None:
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

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]], *, weight: int = 0) -> T:
        """Run ``work`` in the next group transaction; return once it is durably committed."""
        if self._task is None:
            raise RuntimeError("GroupCommitter is not started")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(work, future, weight))
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

    async def _commit(self, batch: list[_Item]) -> None:
        live = [item for item in batch if not item.future.cancelled()]
        results: list[tuple[_Item, bool, Any]] = []
        try:
            async with self._db.transaction() as session:
                for item in live:
                    try:
                        async with session.begin_nested():
                            value = await item.work(session)
                        results.append((item, True, value))
                    except Exception as exc:  # one unit failing must not spoil the batch
                        results.append((item, False, exc))
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
        for item, ok, value in results:
            if item.future.done():
                continue
            if ok:
                item.future.set_result(value)
            else:
                item.future.set_exception(value)
