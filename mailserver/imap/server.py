"""IMAP listeners: 2143 with STARTTLS (RFC 3501 §6.2.1; LOGINDISABLED until then) and 2993
with implicit TLS (RFC 8314)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from mailserver.imap.connection import Connection
from mailserver.imap.framing import FramingLimits
from mailserver.imap.session import Session, SessionConfig, SessionDeps

log = logging.getLogger("openmss.imap")


class ImapServer:
    def __init__(
        self, deps: SessionDeps, *, hostname: str, tls: ssl.SSLContext, max_message_size: int
    ) -> None:
        self.deps = deps
        self.hostname = hostname
        self.tls = tls
        self.limits = FramingLimits(max_literal=max_message_size + 64 * 1024)
        self.sessions: dict[asyncio.Task[None], Connection] = {}

    async def start(self, host: str, port: int, *, implicit_tls: bool) -> asyncio.Server:
        config = SessionConfig(hostname=self.hostname, implicit_tls=implicit_tls, tls=self.tls)

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            conn = Connection(reader, writer, limits=self.limits, idle_timeout=config.idle_timeout)
            self.sessions[task] = conn
            try:
                await Session(self.deps, config, conn).run()
            except asyncio.CancelledError:
                pass  # the server is stopping; the connection is closed below
            except Exception:
                log.exception("IMAP session ended with an error", extra={"peer": conn.peer})
            finally:
                await conn.close()
                self.sessions.pop(task, None)

        if implicit_tls:
            return await asyncio.start_server(connected, host, port, ssl=self.tls, ssl_handshake_timeout=30)
        return await asyncio.start_server(connected, host, port)

    async def close_sessions(self) -> None:
        """Stopping: say goodbye (RFC 3501 §7.1.5 BYE) and end every session."""
        for task, conn in list(self.sessions.items()):
            with contextlib.suppress(Exception):
                conn.writer.write(b"* BYE Server shutting down\r\n")
            task.cancel()
        if self.sessions:
            await asyncio.wait(list(self.sessions), timeout=5)
