"""Group commit: many concurrent writers share one durable commit.

Every SMTP session that receives a message must not answer 250 before the message is durably
committed. A commit costs an fsync, and every statement costs work; with dozens of sessions,
paying both per message caps the throughput. ``GroupCommitter`` runs one loop that takes every
unit of work waiting in its queue and commits them together:

* a *batch* unit (``run_batched``) names a handler that stores many payloads at once; all waiting
  payloads of one handler go to a single call, so a group of messages costs a constant number of
  statements whatever its size;
* a plain unit (``run``) is a callable run on its own.

Each call runs inside its own SAVEPOINT. If a batch call fails, its payloads are retried one by
one, each in its own SAVEPOINT, so that one bad unit spoils no other. The transaction is then
committed once, and only after the commit returned is any caller answered.

Where the transaction runs is the backend's business: ``ThreadBackend`` runs it in one writer
thread of this process (a synchronous engine: one hop per group instead of one per statement);
``ProcessBackend`` runs it in a storage worker process, an interpreter of its own, so that
storing messages does not compete with the SMTP sessions for this process's GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import multiprocessing
import pickle
import signal
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy.orm import Session

from openmss.db.engine import Database

T = TypeVar("T")
P = TypeVar("P")
BatchHandler = Callable[[Session, Sequence[Any]], Sequence[Any]]
Outcome = tuple[bool, Any]  # (succeeded, result or exception)
Answer = Callable[[list[list[Outcome]] | BaseException], None]

log = logging.getLogger(__name__)


def _single(session: Session, works: Sequence[Callable[[Session], Any]]) -> list[Any]:
    return [work(session) for work in works]


def _call(session: Session, handler: BatchHandler, payloads: Sequence[Any]) -> list[Outcome]:
    try:
        with session.begin_nested():
            values = handler(session, payloads)
        if len(values) != len(payloads):
            raise RuntimeError(f"{handler!r} returned {len(values)} results for {len(payloads)} payloads")
        return [(True, value) for value in values]
    except Exception as exc:
        if len(payloads) == 1:
            return [(False, exc)]
    # Find the culprit: one SAVEPOINT per payload.
    return [outcome for payload in payloads for outcome in _call(session, handler, [payload])]


class _Retry(Exception):
    pass


def run_groups(db: Database, groups: Sequence[tuple[BatchHandler, Sequence[Any]]]) -> list[list[Outcome]]:
    """Synchronously: every group in one transaction, committed once (durably).

    Optimistic first: the groups run without SAVEPOINTs (two statements fewer per group). If
    anything fails, that transaction is rolled back whole and the groups run again with one
    SAVEPOINT per call, and per payload where a call fails, so that only the culprits fail.
    """
    try:
        with db.sync_transaction() as session:
            results: list[list[Outcome]] = []
            for handler, payloads in groups:
                try:
                    values = handler(session, payloads)
                except Exception as exc:
                    raise _Retry from exc
                if len(values) != len(payloads):
                    raise _Retry
                results.append([(True, value) for value in values])
            return results
    except _Retry:
        pass
    with db.sync_transaction() as session:
        return [_call(session, handler, payloads) for handler, payloads in groups]


class Backend(Protocol):
    def start(self) -> None: ...

    async def stop(self) -> None: ...

    def submit(self, groups: list[tuple[Hashable, list[Any]]], answer: Answer) -> None:
        """Hand groups over; ``answer`` is called on the event loop with one list of outcomes per
        group, in order, or with the exception that failed them all."""


class ThreadBackend:
    """Transactions in one writer thread of this process. Handlers are callables, or names
    looked up in ``handlers``."""

    def __init__(self, db: Database, handlers: dict[str, BatchHandler] | None = None) -> None:
        self._db = db
        self._handlers = handlers or {}
        self._thread: ThreadPoolExecutor | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="openmss-writer")

    async def stop(self) -> None:
        if self._thread is not None:
            thread, self._thread = self._thread, None
            await asyncio.to_thread(thread.shutdown, wait=True)

    def submit(self, groups: list[tuple[Hashable, list[Any]]], answer: Answer) -> None:
        assert self._thread is not None, "backend not started"
        resolved: list[tuple[BatchHandler, Sequence[Any]]] = [
            (self._handlers[key] if isinstance(key, str) else cast(BatchHandler, key), payloads)
            for key, payloads in groups
        ]
        done = asyncio.get_running_loop().run_in_executor(self._thread, run_groups, self._db, resolved)

        def relay(future: asyncio.Future[list[list[Outcome]]]) -> None:
            if future.cancelled():
                answer(RuntimeError("commit cancelled"))
            else:
                answer(future.exception() or future.result())

        done.add_done_callback(relay)


# The storage worker process's own state, set once by its initializer; never used in the parent.
_CHILD: dict[str, Any] = {}


def _child_init(factory: str, config: dict[str, Any]) -> None:
    module, _, name = factory.partition(":")
    db, handlers = getattr(importlib.import_module(module), name)(config)
    _CHILD.update(db=db, handlers=handlers)


def _portable(outcome: Outcome) -> Outcome:
    ok, value = outcome
    try:
        pickle.dumps(value)
        return outcome
    except Exception:
        return ok, RuntimeError(f"{type(value).__name__}: {value}")


def _child_run(groups: list[tuple[str, list[Any]]]) -> list[list[Outcome]]:
    handlers = _CHILD["handlers"]
    return run_groups(_CHILD["db"], [(handlers[name], payloads) for name, payloads in groups])


def _send_reply(conn: Connection, reply: Any) -> None:
    """One pickle per reply; only when it does not pickle (an exception or result that cannot
    travel) is each outcome checked and, where needed, replaced by a plain RuntimeError."""
    try:
        data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        if isinstance(reply, BaseException):
            reply = _portable((False, reply))[1]
        else:
            reply = [[_portable(outcome) for outcome in group] for group in reply]
        data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    conn.send_bytes(data)


_GROUP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _group_signals_ignored_by_children() -> Iterator[None]:
    """Children started in this block are born ignoring SIGINT and SIGTERM (an ignored signal
    stays ignored across exec; a blocked one does not stay blocked with "spawn"), so that a
    signal sent to the process group while a child still imports cannot kill it. This
    process's own handlers are put back at once; a signal that comes meanwhile waits, blocked,
    and is delivered to them."""
    if threading.current_thread() is not threading.main_thread() or any(
        signal.getsignal(signum) is None for signum in _GROUP_SIGNALS
    ):
        yield  # handlers belong to the main thread; one set outside Python could not be put back
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _GROUP_SIGNALS)
    handlers = {signum: signal.signal(signum, signal.SIG_IGN) for signum in _GROUP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


class StorageProcessDied(RuntimeError):
    """The storage worker process ended; what it had not committed is not committed."""


def _child_main(conn: Connection, factory: str, config: dict[str, Any]) -> None:
    """The storage worker process. It takes every request waiting in the pipe (each a list of
    groups from one round of the parent's group commit), stores them all in one transaction
    with one call per handler, commits once, then answers each request in order.

    Its lifetime is the parent's: it exits when the parent says so (after the work it was
    given) or goes away (end of the pipe). Signals meant for the whole process group (Ctrl-C's
    SIGINT; the SIGTERM of ``kill -- -PGID``, systemd or ``docker stop``) are ignored, so that
    the parent's clean shutdown still gets its last groups committed and answered. SIGKILL
    still ends it: a transaction cut short is not committed, and nothing uncommitted was ever
    acknowledged."""
    for signum in _GROUP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    _child_init(factory, config)
    while True:
        try:
            requests = [conn.recv()]
            while requests[-1] is not None and len(requests) < 64 and conn.poll():
                requests.append(conn.recv())
        except EOFError:
            return
        stop = requests[-1] is None
        requests = [r for r in requests if r is not None]
        if requests:
            for reply in _run_requests(requests):
                _send_reply(conn, reply)
        if stop:
            return


def _run_requests(requests: list[list[tuple[str, list[Any]]]]) -> list[Any]:
    merged: dict[str, list[Any]] = {}
    for groups in requests:
        for name, payloads in groups:
            merged.setdefault(name, []).extend(payloads)
    try:
        outcomes = dict(zip(merged, _child_run(list(merged.items())), strict=True))
    except Exception as exc:  # the transaction itself failed (e.g. the disk is full)
        failure = _portable((False, exc))[1]
        return [failure for _ in requests]
    taken = dict.fromkeys(merged, 0)
    replies: list[Any] = []
    for groups in requests:
        reply = []
        for name, payloads in groups:
            start = taken[name]
            reply.append(outcomes[name][start : start + len(payloads)])
            taken[name] = start + len(payloads)
        replies.append(reply)
    return replies


class ProcessBackend:
    """Transactions in a storage worker process. ``factory`` ("module:function") is called in
    the child with ``config`` and returns ``(Database, {name: handler})``; handlers are named.

    One duplex pipe: requests are written from the event loop (large ones from a helper
    thread, so that a 25 MB message never stalls the loop), replies are read by an event-loop
    reader callback, in order. No feeder or manager thread competes for this process's GIL.
    """

    _DIRECT_SEND = 1 << 20

    def __init__(self, factory: str, config: dict[str, Any]) -> None:
        self._factory = factory
        self._config = config
        self._proc: Any = None
        self._conn: Connection | None = None
        self._waiting: deque[Answer] = deque()
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="openmss-storage-send")
        self._sends_in_thread = 0  # while > 0, every send goes through the thread: bytes never interleave
        self._stopping = False

    def start(self) -> None:
        if self._proc is not None:
            return
        # "spawn": a fresh interpreter, nothing inherited from this threaded asyncio process.
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(
            target=_child_main, args=(child, self._factory, self._config), name="openmss-storage", daemon=True
        )
        with _group_signals_ignored_by_children():
            self._proc.start()
        child.close()
        self._conn = parent
        asyncio.get_running_loop().add_reader(parent.fileno(), self._readable)

    def _readable(self) -> None:
        conn = self._conn
        assert conn is not None
        try:
            while conn.poll():
                reply = conn.recv()
                self._waiting.popleft()(reply)  # answered here: no extra loop iteration
        except (EOFError, OSError):
            self._died()

    def _died(self) -> None:
        if self._stopping:
            return
        log.error("storage worker process died; starting a new one")
        self._close()
        while self._waiting:
            self._waiting.popleft()(StorageProcessDied("storage worker process died"))
        self.start()

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._conn.fileno())
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            self._proc.join(timeout=0.1)
            if self._proc.is_alive():
                self._proc.kill()
            self._proc = None

    async def stop(self) -> None:
        """Ask the worker to finish what it has and exit; wait for it (on the event loop)."""
        self._stopping = True
        conn, proc = self._conn, self._proc
        if conn is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(conn.fileno())
            with contextlib.suppress(Exception):
                conn.send(None)
        if proc is not None:
            await asyncio.to_thread(proc.join, 10)
            if proc.is_alive():
                proc.kill()
        if conn is not None:
            conn.close()
        self._conn = self._proc = None
        while self._waiting:
            self._waiting.popleft()(StorageProcessDied("server is stopping"))
        self._sender.shutdown(wait=False)

    def submit(self, groups: list[tuple[Hashable, list[Any]]], answer: Answer) -> None:
        if self._conn is None:
            self.start()
        conn = self._conn
        assert conn is not None
        loop = asyncio.get_running_loop()
        self._waiting.append(answer)
        data = pickle.dumps(
            [(str(key), payloads) for key, payloads in groups], protocol=pickle.HIGHEST_PROTOCOL
        )
        if len(data) <= self._DIRECT_SEND and not self._sends_in_thread:
            try:
                conn.send_bytes(data)
            except (OSError, EOFError):
                self._died()
            return
        # A large request: written by the helper thread so that the event loop never blocks on a
        # full pipe. Requests after it follow the same (FIFO) path until it is written.
        self._sends_in_thread += 1
        sending = loop.run_in_executor(self._sender, conn.send_bytes, data)
        sending.add_done_callback(self._sent)

    def _sent(self, sending: asyncio.Future[None]) -> None:
        self._sends_in_thread -= 1
        if not sending.cancelled() and sending.exception() is not None:
            self._died()


@dataclass
class _Item:
    key: Hashable
    payload: Any
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
        backend: Backend | Database,
        *,
        max_batch: int = 256,
        max_batch_bytes: int = 64 * 1024 * 1024,
        batch_delay: float = 0.0,
        on_commit: Callable[[int], None] = lambda units: None,
        in_flight: int = 4,
    ) -> None:
        self._backend: Backend = ThreadBackend(backend) if isinstance(backend, Database) else backend
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._max_batch = max_batch
        self._max_bytes = max_batch_bytes
        self._delay = batch_delay
        self._on_commit = on_commit
        self._task: asyncio.Task[None] | None = None
        self._last_size = 0
        # Groups handed to the backend and not yet answered: while one commits, the next is
        # already on its way (the backend's single thread or process still runs them in order).
        self._in_flight = in_flight
        self._slots = asyncio.Semaphore(in_flight)
        self.stats = CommitStats()

    def start(self) -> None:
        if self._task is None:
            self._backend.start()
            self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        # Wait (bounded) until every group handed over has been answered.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                for _ in range(self._in_flight):
                    await self._slots.acquire()
        self._slots = asyncio.Semaphore(self._in_flight)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(RuntimeError("server is stopping"))
        await self._backend.stop()

    async def run(self, work: Callable[[Session], T], *, weight: int = 0) -> T:
        """Run ``work`` in the next group transaction; return once it is durably committed."""
        result: T = await self._submit(_single, work, weight)
        return result

    async def run_batched(
        self, handler: Callable[[Session, Sequence[P]], Sequence[T]] | str, payload: P, *, weight: int = 0
    ) -> T:
        """Give ``payload`` to ``handler`` (a callable, or a name the backend knows) together with
        every other waiting payload of the same handler; the handler returns one result per
        payload, in order. Returns this payload's result once it is durably committed."""
        result: T = await self._submit(handler, payload, weight)
        return result

    async def _submit(self, key: Hashable, payload: Any, weight: int) -> Any:
        if self._task is None:
            raise RuntimeError("GroupCommitter is not started")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(key, payload, future, weight))
        return await future

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if self._delay and self._last_size > 1 and self._slots.locked():
                # Under load (the last group was shared and every slot is busy), wait a moment
                # for more units: fewer, larger commits. A lone writer is never delayed.
                await asyncio.sleep(self._delay)
            batch = [first]
            size = first.weight
            while len(batch) < self._max_batch and size < self._max_bytes and not self._queue.empty():
                item = self._queue.get_nowait()
                batch.append(item)
                size += item.weight
            self._last_size = len(batch)
            await self._slots.acquire()
            self._dispatch(batch)

    def _dispatch(self, batch: list[_Item]) -> None:
        """Hand a batch to the backend now; its callers are answered when the commit returns."""
        live = [item for item in batch if not item.future.cancelled()]
        groups: dict[tuple[str, object], list[_Item]] = {}
        for item in live:
            # Plain units each get their own call; batch units are grouped by handler (a bound
            # method is a new object at every access, but compares and hashes equal).
            group = ("plain", id(item)) if item.key is _single else ("batch", item.key)
            groups.setdefault(group, []).append(item)
        ordered = list(groups.values())
        try:
            self._backend.submit(
                [(items[0].key, [i.payload for i in items]) for items in ordered],
                lambda reply: self._answer(ordered, live, reply),
            )
        except Exception as exc:
            self._slots.release()
            self._fail(live, exc)

    def _fail(self, live: list[_Item], exc: BaseException) -> None:
        log.error("group commit failed", extra={"units": len(live), "error": repr(exc)})
        self.stats.failures += 1
        for item in live:
            if not item.future.done():
                item.future.set_exception(exc)

    def _answer(
        self, ordered: list[list[_Item]], live: list[_Item], reply: list[list[Outcome]] | BaseException
    ) -> None:
        self._slots.release()
        if isinstance(reply, BaseException):
            self._fail(live, reply)
            return
        self.stats.commits += 1
        self.stats.units += len(live)
        self.stats.largest_batch = max(self.stats.largest_batch, len(live))
        self._on_commit(len(live))
        for items, outcomes in zip(ordered, reply, strict=True):
            for item, (ok, value) in zip(items, outcomes, strict=True):
                if item.future.done():
                    continue
                if ok:
                    item.future.set_result(value)
                else:
                    item.future.set_exception(value)
