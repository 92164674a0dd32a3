"""The IMAP connection: bytes in through the ``Framer``, responses out, STARTTLS, and the
limits that protect the server (idle timeout, output buffering)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from mailserver.imap.framing import Event, Framer, FramingLimits

READ_SIZE = 64 * 1024


class ConnectionClosed(Exception):
    pass


class Connection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        limits: FramingLimits,
        idle_timeout: float,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.framer = Framer(limits)
        self.idle_timeout = idle_timeout
        self._eof = False

    @property
    def tls(self) -> bool:
        return self.writer.get_extra_info("ssl_object") is not None

    @property
    def peer(self) -> str:
        peer = self.writer.get_extra_info("peername")
        return str(peer[0]) if isinstance(peer, tuple) and peer else ""

    def tls_version(self) -> str | None:
        obj = self.writer.get_extra_info("ssl_object")
        return obj.version() if obj is not None else None

    async def next_event(self, timeout: float | None = None) -> Event:  # noqa: ASYNC109
        """The next framing event; reads from the socket as needed. Raises ``ConnectionClosed``
        at end of stream, and ``TimeoutError`` after ``timeout`` (default: the idle timeout,
        RFC 3501 §5.4: at least 30 minutes of inactivity are allowed)."""
        while True:
            event = self.framer.next_event()
            if event is not None:
                return event
            if self._eof or self.framer.closed:
                raise ConnectionClosed()
            try:
                async with asyncio.timeout(timeout if timeout is not None else self.idle_timeout):
                    data = await self.reader.read(READ_SIZE)
            except (ConnectionError, ssl.SSLError, OSError) as exc:
                raise ConnectionClosed() from exc
            if not data:
                self._eof = True
                raise ConnectionClosed()
            self.framer.receive(data)

    async def send(self, *chunks: bytes) -> None:
        try:
            # One write: every write() is a TLS record of its own, and a syscall.
            self.writer.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            await self.writer.drain()
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            raise ConnectionClosed() from exc

    async def start_tls(self, context: ssl.SSLContext) -> None:
        """RFC 3501 §6.2.1 / RFC 3207 style: the TLS negotiation starts right after the tagged
        OK; anything the client pipelined before it is discarded (command injection)."""
        self.framer = Framer(self.framer.limits)
        await self.writer.start_tls(context)

    async def close(self) -> None:
        # The peer may already be gone, or TLS may fail to say goodbye: nothing to report.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            self.writer.close()
            async with asyncio.timeout(5):
                await self.writer.wait_closed()
