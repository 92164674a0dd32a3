"""Tests for mailserver.imap.framing: the client stream cut into commands."""

from __future__ import annotations

import time

import pytest

from mailserver.imap.framing import (
    CommandLine,
    ContinuationNeeded,
    Event,
    Framer,
    FramingError,
    FramingLimits,
    Literal,
)


def feed_bytewise(framer: Framer, data: bytes) -> list[Event]:
    events: list[Event] = []
    for i in range(len(data)):
        events += framer.feed(data[i : i + 1])
    return events


def test_simple_lines() -> None:
    framer = Framer()
    assert framer.feed(b"a1 NOOP\r\na2 CAPABILITY\r\na3 LOG") == [
        CommandLine((b"a1 NOOP",)),
        CommandLine((b"a2 CAPABILITY",)),
    ]
    assert framer.in_command
    assert framer.feed(b"OUT\r\n") == [CommandLine((b"a3 LOGOUT",))]
    assert not framer.in_command


def test_bare_lf_is_tolerated() -> None:
    assert Framer().feed(b"a NOOP\nb NOOP\r\n") == [CommandLine((b"a NOOP",)), CommandLine((b"b NOOP",))]


def test_empty_line_is_a_command_line() -> None:
    # The parser decides what to answer.
    assert Framer().feed(b"\r\n") == [CommandLine((b"",))]


def test_synchronising_literal() -> None:
    framer = Framer()
    assert framer.feed(b"a LOGIN {5}\r\n") == [ContinuationNeeded(5)]
    assert framer.feed(b"alice {6}\r\n") == [ContinuationNeeded(6)]
    [line] = framer.feed(b"secret\r\n")
    assert line == CommandLine((b"a LOGIN ", Literal(b"alice", False), b" ", Literal(b"secret", False), b""))
    assert isinstance(line, CommandLine)
    assert line.text == b"a LOGIN  "
    assert line.literals == (Literal(b"alice", False), Literal(b"secret", False))
    assert line.tag == "a"


def test_non_synchronising_literal_needs_no_continuation() -> None:
    # RFC 7888 LITERAL+.
    assert Framer().feed(b"a LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n") == [
        CommandLine((b"a LOGIN ", Literal(b"alice", True), b" ", Literal(b"secret", True), b""))
    ]


def test_literal8_is_marked_binary() -> None:
    assert Framer().feed(b"a APPEND x ~{3+}\r\n\x00\x01\x02\r\n") == [
        CommandLine((b"a APPEND x ", Literal(b"\x00\x01\x02", True, binary=True), b""))
    ]


def test_literal_holding_crlf_and_braces() -> None:
    data = b"line1\r\nx {5}\r\n"
    assert Framer().feed(b"a APPEND x {%d+}\r\n" % len(data) + data + b"\r\n") == [
        CommandLine((b"a APPEND x ", Literal(data, True), b""))
    ]


def test_empty_literal() -> None:
    assert Framer().feed(b"a LOGIN {0}\r\n {0+}\r\n\r\n") == [
        ContinuationNeeded(0),
        CommandLine((b"a LOGIN ", Literal(b"", False), b" ", Literal(b"", True), b"")),
    ]


def test_not_a_literal() -> None:
    for line in (b"a X {abc}", b"a X {}", b"a X {+}", b"a X }", b"a X {1 }"):
        assert Framer().feed(line + b"\r\n") == [CommandLine((line,))]


COMMANDS = (
    b"a1 LOGIN {5}\r\nalice {6+}\r\nsecret\r\n"
    b"a2 APPEND INBOX (\\Seen) {12}\r\nHello\r\nWorld\r\n"
    b"a3 UID fetch 1:* (FLAGS)\n"
    b"a4 SEARCH SUBJECT ~{3+}\r\nabc TEXT {0}\r\n\r\n"
)


def test_byte_by_byte_gives_the_same_events() -> None:
    whole = Framer().feed(COMMANDS)
    assert [type(e).__name__ for e in whole] == [
        "ContinuationNeeded",
        "CommandLine",
        "ContinuationNeeded",
        "CommandLine",
        "CommandLine",
        "ContinuationNeeded",
        "CommandLine",
    ]
    assert feed_bytewise(Framer(), COMMANDS) == whole


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_any_chunking_gives_the_same_events(size: int) -> None:
    framer = Framer()
    events: list[Event] = []
    for i in range(0, len(COMMANDS), size):
        events += framer.feed(COMMANDS[i : i + size])
    assert events == Framer().feed(COMMANDS)


def test_line_too_long_then_resynchronise() -> None:
    framer = Framer(FramingLimits(max_line=100))
    events = framer.feed(b"t1 SEARCH " + b"x" * 200 + b"\r\nt2 NOOP\r\n")
    assert events == [FramingError("t1", "line too long", fatal=False), CommandLine((b"t2 NOOP",))]


def test_line_too_long_incrementally_keeps_no_buffer() -> None:
    framer = Framer(FramingLimits(max_line=1000))
    assert framer.feed(b"t1 X ") == []
    started = time.perf_counter()
    for _ in range(2000):  # 2 MB in 1 kB chunks: thrown away as it comes
        assert framer.feed(b"y" * 1000) == []
    assert framer.feed(b"\r\nt2 NOOP\r\n") == [
        FramingError("t1", "line too long", fatal=False),
        CommandLine((b"t2 NOOP",)),
    ]
    assert time.perf_counter() - started < 2


def test_line_at_the_limit_is_accepted() -> None:
    line = b"t " + b"x" * 98
    assert Framer(FramingLimits(max_line=100)).feed(line + b"\r\n") == [CommandLine((line,))]
    assert feed_bytewise(Framer(FramingLimits(max_line=100)), line + b"\r\n") == [CommandLine((line,))]


def test_too_long_line_announcing_a_non_synchronising_literal() -> None:
    # The literal that the refused line announces is sent anyway: it must not be read as commands.
    framer = Framer(FramingLimits(max_line=50))
    data = b"t1 APPEND " + b"x" * 100 + b" {11+}\r\nt9 LOGOUT\r\n\r\nt2 NOOP\r\n"
    assert framer.feed(data) == [FramingError("t1", "line too long", fatal=False), CommandLine((b"t2 NOOP",))]


def test_synchronising_literal_too_large() -> None:
    framer = Framer(FramingLimits(max_literal=10))
    # The client waits for a continuation that never comes: the error ends the command at once.
    assert framer.feed(b"t1 APPEND INBOX {11}\r\n") == [
        FramingError("t1", "literal too large", fatal=False, code="TOOBIG")
    ]
    assert framer.feed(b"t2 NOOP\r\n") == [CommandLine((b"t2 NOOP",))]


def test_non_synchronising_literal_too_large_is_read_and_thrown_away() -> None:
    framer = Framer(FramingLimits(max_literal=10))
    data = b"t1 APPEND INBOX {22+}\r\n" + b"t0 LOGOUT\r\n" * 2 + b" rest {3+}\r\nabc\r\nt2 NOOP\r\n"
    expected = [
        FramingError("t1", "literal too large", fatal=False, code="TOOBIG"),
        CommandLine((b"t2 NOOP",)),
    ]
    assert framer.feed(data) == expected
    assert feed_bytewise(Framer(FramingLimits(max_literal=10)), data) == expected


def test_refused_command_ending_with_a_synchronising_literal() -> None:
    framer = Framer(FramingLimits(max_literal=10))
    data = b"t1 X {20+}\r\n" + b"y" * 20 + b" {5}\r\nt2 NOOP\r\n"
    assert framer.feed(data) == [
        FramingError("t1", "literal too large", fatal=False, code="TOOBIG"),
        CommandLine((b"t2 NOOP",)),
    ]


def test_huge_non_synchronising_literal_is_fatal() -> None:
    framer = Framer(FramingLimits(max_literal=10, max_discard=100))
    assert framer.feed(b"t1 APPEND INBOX {101+}\r\n") == [
        FramingError("t1", "literal too large", fatal=True, code="TOOBIG")
    ]
    assert framer.closed
    assert framer.feed(b"t2 NOOP\r\n") == []


def test_absurd_literal_sizes() -> None:
    digits = b"9" * 5000  # int() would refuse this many digits
    assert Framer().feed(b"t1 X {" + digits + b"}\r\n") == [
        FramingError("t1", "literal too large", fatal=False, code="TOOBIG")
    ]
    [error] = Framer().feed(b"t1 X {" + digits + b"+}\r\n")
    assert isinstance(error, FramingError) and error.fatal


def test_too_many_literals() -> None:
    framer = Framer(FramingLimits(max_literals=2))
    assert framer.feed(b"t1 X {1+}\r\na {1+}\r\nb {1}\r\n") == [
        FramingError("t1", "too many literals in command", fatal=False)
    ]
    assert framer.feed(b"t2 X {1+}\r\na {1+}\r\nb\r\n") == [
        CommandLine((b"t2 X ", Literal(b"a", True), b" ", Literal(b"b", True), b""))
    ]


def test_command_too_large() -> None:
    framer = Framer(FramingLimits(max_literal=100, max_command=150))
    assert framer.feed(b"t1 X {90+}\r\n" + b"a" * 90 + b" {90+}\r\n" + b"b" * 90 + b"\r\nt2 NOOP\r\n") == [
        FramingError("t1", "command too large", fatal=False, code="TOOBIG"),
        CommandLine((b"t2 NOOP",)),
    ]


def test_untagged_error_when_the_tag_is_unreadable() -> None:
    [error] = Framer(FramingLimits(max_line=10)).feed(b"(((((((((((((((\r\n")
    assert error == FramingError(None, "line too long", fatal=False)


def test_raw_lines_for_idle() -> None:
    framer = Framer()
    framer.receive(b"i1 IDLE\r\nDONE\r\ni2 NOOP {3}\r\n")
    assert framer.next_event() == CommandLine((b"i1 IDLE",))
    framer.raw_lines = True  # the session enters IDLE
    done = framer.next_event()
    assert done == CommandLine((b"DONE",))
    assert isinstance(done, CommandLine) and done.text == b"DONE"
    framer.raw_lines = False  # and leaves it
    assert framer.next_event() == ContinuationNeeded(3)
    assert framer.next_event() is None


def test_raw_lines_take_braces_literally() -> None:
    framer = Framer()
    framer.raw_lines = True
    assert framer.feed(b"dGVzdA== {5}\r\n*\r\n") == [CommandLine((b"dGVzdA== {5}",)), CommandLine((b"*",))]


def test_raw_line_too_long() -> None:
    framer = Framer(FramingLimits(max_line=10))
    framer.raw_lines = True
    events = framer.feed(b"A" * 30 + b" {5+}\r\nDONE\r\n")
    assert events == [FramingError(None, "line too long", fatal=False), CommandLine((b"DONE",))]
