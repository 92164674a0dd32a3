"""Framing of the IMAP client stream into whole commands (RFC 3501 §2.2, §4.3, §7.5; RFC 7888).

A command is one or more CRLF-terminated lines: a line that ends with a literal announcement
``{n}`` (synchronising: the server must first send a ``+`` continuation), ``{n+}``
(non-synchronising, LITERAL+) or ``~{n}`` (RFC 3516 literal8) is followed by exactly ``n`` octets
and then by the rest of the command. The :class:`Framer` is a pure state machine: bytes go in,
:class:`CommandLine`, :class:`ContinuationNeeded` and :class:`FramingError` events come out, and
nothing is ever buffered beyond the configured limits.

Two ways to drive it::

    for event in framer.feed(data): ...          # all the events the data completes

    framer.receive(data)                          # or one at a time, so that the session can
    while (event := framer.next_event()) is not None:   # switch ``raw_lines`` between events
        ...

``raw_lines``: while set, every line is returned as a one-part :class:`CommandLine` without any
literal processing: the ``DONE`` that ends IDLE (RFC 2177) and the base64 responses of an
AUTHENTICATE exchange (RFC 3501 §6.2.2) are such lines. The session sets it after the event that
starts the exchange and clears it after the event that ends it, using ``next_event`` so that a
pipelined command behind ``DONE`` is framed in the right mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

from mailserver.imap.wire import TAG_CHARS

_TAIL = 32  # octets of a discarded line kept to see a literal announcement at its end
_MAX_DIGITS = 12  # more digits than this is certainly too large (and int() is never asked)


@dataclass(frozen=True, slots=True)
class FramingLimits:
    max_line: int = 64 * 1024
    """Octets of one line, without its CRLF and without literals."""
    max_literal: int = 32 * 1024 * 1024
    """Octets of one literal."""
    max_literals: int = 64
    """Literals in one command."""
    max_command: int = 40 * 1024 * 1024
    """Octets of a whole command: its lines and literals."""
    max_discard: int = 64 * 1024 * 1024
    """Largest refused non-synchronising literal that is read and thrown away; a larger one is a
    fatal error (the connection should be closed rather than read for ever)."""


@dataclass(frozen=True, slots=True)
class Literal:
    """The octets of a literal, kept apart from the line text around it."""

    data: bytes
    non_sync: bool
    binary: bool = False


Part = bytes | Literal


@dataclass(frozen=True, slots=True)
class CommandLine:
    """One complete command. ``parts`` alternate line text and literals, starting and ending with
    text: ``a LOGIN {5}\\r\\nalice {6+}\\r\\nsecret\\r\\n`` is
    ``(b"a LOGIN ", Literal(b"alice", False), b" ", Literal(b"secret", True), b"")``; the literal
    announcements and the line ends are gone. A raw line (``Framer.raw_lines``) is ``(line,)``."""

    parts: tuple[Part, ...]

    @property
    def text(self) -> bytes:
        """The line text without the literals: the whole line for a raw line."""
        return b"".join(part for part in self.parts if isinstance(part, bytes))

    @property
    def literals(self) -> tuple[Literal, ...]:
        return tuple(part for part in self.parts if isinstance(part, Literal))

    @property
    def tag(self) -> str | None:
        """The tag, if the command starts with one that is well formed."""
        first = self.parts[0] if self.parts else b""
        return guess_tag(first) if isinstance(first, bytes) else None


@dataclass(frozen=True, slots=True)
class ContinuationNeeded:
    """A synchronising literal of ``size`` octets was announced and is acceptable: the session
    must send ``+ Ready for literal data`` before the client sends it (RFC 3501 §7.5)."""

    size: int


@dataclass(frozen=True, slots=True)
class FramingError:
    """A command that cannot be taken. Non-fatal: the whole command was discarded (the client
    sends nothing more of it) and the session answers ``tag BAD`` (or ``NO [code]``), or
    ``* BAD`` without a tag; framing goes on at the next line. Fatal: close the connection."""

    tag: str | None
    reason: str
    fatal: bool
    code: str | None = None
    """A response code for the answer, e.g. ``TOOBIG`` (RFC 4469; RFC 7888 §4)."""


Event = CommandLine | ContinuationNeeded | FramingError


_MAX_TAG = 256


def guess_tag(line: bytes) -> str | None:
    """The tag at the start of ``line`` (RFC 3501 §9 ``tag``), or ``None`` if there is no
    well-formed one (or none shorter than 256 octets)."""
    tag = line[: _MAX_TAG + 1].split(b" ", 1)[0]
    if tag and len(tag) <= _MAX_TAG and all(octet in TAG_CHARS for octet in tag):
        return tag.decode("ascii")
    return None


@dataclass(frozen=True, slots=True)
class _Announcement:
    start: int  # where the announcement begins in the line
    size: int | None  # None: too many digits to be acceptable
    non_sync: bool
    binary: bool


def _announcement(line: bytes) -> _Announcement | None:
    """The literal announced at the end of ``line`` (``{n}``, ``{n+}``, ``~{n}``, ``~{n+}``)."""
    if not line.endswith(b"}"):
        return None
    opening = line.rfind(b"{")
    if opening < 0:
        return None
    inner = line[opening + 1 : -1]
    non_sync = inner.endswith(b"+")
    digits = inner[:-1] if non_sync else inner
    if not digits or not digits.isdigit():
        return None
    binary = opening > 0 and line[opening - 1] == ord("~")
    size = int(digits) if len(digits) <= _MAX_DIGITS else None
    return _Announcement(opening - 1 if binary else opening, size, non_sync, binary)


class _State(Enum):
    LINE = auto()  # reading a line of the command
    LITERAL = auto()  # reading the octets of a literal
    DISCARD_LITERAL = auto()  # throwing away the octets of a refused non-synchronising literal
    SKIP_LINE = auto()  # throwing away the rest of a line of a refused command
    CLOSED = auto()  # after a fatal error


class Framer:
    """Incremental framing of one connection's client stream; see the module docstring."""

    def __init__(self, limits: FramingLimits | None = None) -> None:
        self.limits = limits or FramingLimits()
        self.raw_lines = False
        self._buf = bytearray()
        self._pos = 0  # start of the unread octets in _buf
        self._scan = 0  # no LF before this offset of _buf
        self._state = _State.LINE
        self._parts: list[Part] = []
        self._command_size = 0
        self._literal = bytearray()
        self._literal_size = 0
        self._literal_non_sync = False
        self._literal_binary = False
        self._discard = 0
        self._tail = b""
        self._error: FramingError | None = None  # reported once the refused command is consumed

    @property
    def in_command(self) -> bool:
        """Whether part of a command has been received (for idle timeouts and logging)."""
        return bool(self._parts) or self._state is not _State.LINE or self._pos < len(self._buf)

    @property
    def closed(self) -> bool:
        """Whether a fatal error was reported: nothing more comes out."""
        return self._state is _State.CLOSED

    def feed(self, data: bytes) -> list[Event]:
        """Take ``data`` and return every event it completes."""
        self.receive(data)
        events: list[Event] = []
        while (event := self.next_event()) is not None:
            events.append(event)
        return events

    def receive(self, data: bytes) -> None:
        """Take ``data``; the events come from :meth:`next_event`."""
        if self._state is _State.CLOSED:
            return
        if self._pos:
            del self._buf[: self._pos]
            self._scan -= self._pos
            self._pos = 0
        self._buf += data

    def next_event(self) -> Event | None:
        """The next event, or ``None`` when more data is needed."""
        while True:
            state = self._state
            if state is _State.CLOSED:
                return None
            if state is _State.LINE:
                event = self._read_line()
            elif state is _State.LITERAL:
                event = self._read_literal()
            elif state is _State.DISCARD_LITERAL:
                event = self._discard_literal()
            else:
                event = self._skip_line()
            if event is not None or self._state is state:
                return event

    # -- states ---------------------------------------------------------------------------------

    def _read_line(self) -> Event | None:
        end = self._buf.find(b"\n", self._scan)
        if end < 0:
            self._scan = len(self._buf)
            if len(self._buf) - self._pos > self.limits.max_line + 1:  # +1: a CR may follow
                self._refuse("line too long")
            return None
        line = bytes(self._buf[self._pos : end])
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.limits.max_line:
            self._refuse("line too long")  # _skip_line finds the same LF
            return None
        self._pos = self._scan = end + 1
        if self.raw_lines and not self._parts:
            return CommandLine((line,))
        announced = _announcement(line)
        self._command_size += len(line) + 2
        if announced is None:
            self._parts.append(line)
            return self._finish_command()
        self._parts.append(line[: announced.start])
        return self._start_literal(announced)

    def _start_literal(self, announced: _Announcement) -> Event | None:
        limits = self.limits
        size = announced.size
        if size is None or size > limits.max_literal:
            reason, code = "literal too large", "TOOBIG"
        elif sum(isinstance(part, Literal) for part in self._parts) >= limits.max_literals:
            reason, code = "too many literals in command", None
        elif self._command_size + size > limits.max_command:
            reason, code = "command too large", "TOOBIG"
        else:
            self._state = _State.LITERAL
            self._literal = bytearray()
            self._literal_size = size
            self._literal_non_sync = announced.non_sync
            self._literal_binary = announced.binary
            return None if announced.non_sync else ContinuationNeeded(size)
        error = FramingError(self._tag(), reason, fatal=False, code=code)
        if not announced.non_sync:
            # RFC 3501 §7.5: without the continuation the client does not send the literal and
            # takes the tagged answer as the end of the command.
            self._reset_command()
            return error
        # RFC 7888 §4: a non-synchronising literal comes anyway: read it and throw it away
        # (with the rest of the command), then answer.
        return self._discard_announced(size, error)

    def _read_literal(self) -> Event | None:
        wanted = self._literal_size - len(self._literal)
        available = len(self._buf) - self._pos
        take = min(wanted, available)
        self._literal += self._buf[self._pos : self._pos + take]
        self._pos += take
        if take < wanted:
            return None
        self._parts.append(Literal(bytes(self._literal), self._literal_non_sync, self._literal_binary))
        self._command_size += self._literal_size
        self._literal = bytearray()
        self._state = _State.LINE
        self._scan = self._pos
        return None

    def _discard_literal(self) -> Event | None:
        take = min(self._discard, len(self._buf) - self._pos)
        self._pos += take
        self._discard -= take
        if self._discard == 0:
            self._state = _State.SKIP_LINE
            self._tail = b""
        return None

    def _skip_line(self) -> Event | None:
        end = self._buf.find(b"\n", self._pos)
        if end < 0:
            self._tail = (self._tail + self._buf[self._pos :])[-_TAIL:]
            self._pos = self._scan = len(self._buf)
            return None
        tail = (self._tail + self._buf[self._pos : end])[-_TAIL:]
        self._pos = self._scan = end + 1
        self._tail = b""
        if tail.endswith(b"\r"):
            tail = tail[:-1]
        announced = None if self.raw_lines and not self._parts else _announcement(tail)
        if announced is not None and announced.non_sync:
            # The refused command goes on with another literal that the client sends unasked.
            return self._discard_announced(announced.size, None)
        # Either the end of the command, or a synchronising literal that the client will not
        # send since it gets the tagged answer instead of a continuation.
        error = self._error or FramingError(self._tag(), "command refused", fatal=False)
        self._reset_command()
        return error

    # -- helpers --------------------------------------------------------------------------------

    def _discard_announced(self, size: int | None, error: FramingError | None) -> Event | None:
        if error is not None:
            self._error = error
        if size is None or size > self.limits.max_discard:
            self._state = _State.CLOSED
            return FramingError(self._tag(), "literal too large", fatal=True, code="TOOBIG")
        self._discard = size
        self._state = _State.DISCARD_LITERAL
        return None

    def _refuse(self, reason: str) -> None:
        """Throw the rest of the current line away (and what follows it of the command)."""
        self._error = FramingError(self._tag(), reason, fatal=False)
        self._state = _State.SKIP_LINE
        self._tail = b""

    def _tag(self) -> str | None:
        if self._parts:
            first = self._parts[0]
            return guess_tag(first) if isinstance(first, bytes) else None
        if self.raw_lines:
            return None  # a raw line is not a command: it has no tag
        return guess_tag(bytes(self._buf[self._pos : self._pos + _MAX_TAG + 1]))

    def _finish_command(self) -> CommandLine:
        command = CommandLine(tuple(self._parts))
        self._reset_command()
        return command

    def _reset_command(self) -> None:
        self._parts = []
        self._command_size = 0
        self._error = None
        self._state = _State.LINE
