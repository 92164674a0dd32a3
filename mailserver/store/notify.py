"""Telling sessions that a mailbox changed (new message, flags, expunge).

Within one process, ``MailboxEvents`` wakes the sessions watching a mailbox (IMAP IDLE, and
the next command of every other session). Across processes sharing one PostgreSQL, every
transaction that changes a mailbox also runs ``pg_notify`` on ``CHANNEL``: PostgreSQL delivers
the notification to every listening instance when, and only if, the transaction commits.
Each instance listens on one connection of its own and relays to its ``MailboxEvents``.

A notification only says *which* mailbox changed; sessions then read what changed since the
mod-sequence they know (``mailserver.store.changes``), so a lost or duplicate notification
costs a query, never a wrong view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator

from sqlalchemy import text
from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

CHANNEL = "openmss_mailbox"
_PAYLOAD_MAX = 7000  # PostgreSQL refuses payloads of 8000 bytes or more
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


def _payloads(mailbox_ids: Iterable[int]) -> Iterator[str]:
    current: list[str] = []
    size = 0
    for box in mailbox_ids:
        item = str(box)
        if current and size + len(item) + 1 > _PAYLOAD_MAX:
            yield ",".join(current)
            current, size = [], 0
        current.append(item)
        size += len(item) + 1
    if current:
        yield ",".join(current)


def notify_changed(conn: Connection, mailbox_ids: Iterable[int]) -> None:
    """Inside the changing transaction: on PostgreSQL, notify every instance at commit."""
    if conn.dialect.name != "postgresql":
        return
    for payload in _payloads(sorted(set(mailbox_ids))):
        conn.execute(_NOTIFY, {"channel": CHANNEL, "payload": payload})


class MailboxEvents:
    """In-process wake-ups, per mailbox. A subscriber gets an ``asyncio.Event`` that is set on
    every change of that mailbox; it clears it itself before reading what changed."""

    def __init__(self) -> None:
        self._subscribers: dict[int, set[asyncio.Event]] = {}
        self._listener: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def subscribe(self, mailbox_id: int) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._subscribers.setdefault(mailbox_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._subscribers.get(mailbox_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._subscribers[mailbox_id]

    def publish(self, mailbox_ids: Iterable[int]) -> None:
        for box in mailbox_ids:
            for event in self._subscribers.get(box, ()):
                event.set()

    def _on_notification(self, payload: str) -> None:
        ids = []
        for item in payload.split(","):
            with contextlib.suppress(ValueError):
                ids.append(int(item))
        self.publish(ids)

    # PostgreSQL ------------------------------------------------------------------------------

    def start_listening(self, dsn: str) -> None:
        """Relay PostgreSQL notifications (other instances' changes) to this process."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(dsn), name="mailbox-notifications")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None

    async def _listen(self, dsn: str) -> None:
        import asyncpg

        def relay(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            self._on_notification(payload)

        while True:
            conn = None
            try:
                conn = await asyncpg.connect(dsn)
                closed = asyncio.Event()
                conn.add_termination_listener(lambda _conn, done=closed: done.set())
                await conn.add_listener(CHANNEL, relay)
                # Whatever was missed while (re)connecting: everyone re-reads once.
                self.publish(list(self._subscribers))
                await closed.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("mailbox notifications: connection lost, retrying", extra={"error": repr(exc)})
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(1)
