"""Fuzzing of the IMAP framer and parser: whatever a client sends, in whatever chunks, nothing but
ParseError comes out, and a well-formed command after garbage is still understood."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserver.imap.framing import CommandLine, Event, Framer, FramingError, FramingLimits, Literal
from mailserver.imap.parser import Fetch, Noop, ParseError, ParserLimits, parse_command

SMALL = FramingLimits(max_line=200, max_literal=64, max_literals=4, max_command=300, max_discard=1000)
# IMAP_FUZZ_EXAMPLES=20000 for a longer hunt.
FUZZ = settings(
    max_examples=int(os.environ.get("IMAP_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def feed_in_chunks(framer: Framer, data: bytes, sizes: list[int]) -> list[Event]:
    events: list[Event] = []
    pos = 0
    for size in sizes:
        events += framer.feed(data[pos : pos + size])
        pos += size
    events += framer.feed(data[pos:])
    return events


def parse_all(events: list[Event]) -> None:
    for event in events:
        if isinstance(event, CommandLine):
            try:
                parse_command(event)
                parse_command(event, utf8_names=True, limits=ParserLimits(max_depth=3, max_args=40))
            except ParseError:
                pass


chunks = st.lists(st.integers(min_value=1, max_value=40), max_size=30)


@FUZZ
@given(st.binary(max_size=600), chunks, st.booleans())
def test_arbitrary_bytes(data: bytes, sizes: list[int], small: bool) -> None:
    framer = Framer(SMALL if small else None)
    parse_all(feed_in_chunks(framer, data, sizes))


# Pieces of real syntax, glued at random: far deeper into the grammar than random bytes go.
TOKENS = [
    b" ", b"(", b")", b"[", b"]", b"<", b">", b".", b'"', b"\\", b"{", b"}", b"+", b"*", b"%", b"&", b"-",
    b"\r\n", b"\n", b"0", b"1", b"7", b"4294967296", b"1:*", b"2,4:6", b"$", b"NIL", b"nil",
    b"UID", b"FETCH", b"STORE", b"COPY", b"MOVE", b"SEARCH", b"EXPUNGE", b"LOGIN", b"SELECT", b"LIST",
    b"APPEND", b"STATUS", b"ID", b"ENABLE", b"CREATE", b"RENAME", b"AUTHENTICATE", b"RETURN", b"CHARSET",
    b"UTF-8", b"NOT", b"OR", b"ALL", b"SEEN", b"FROM", b"HEADER", b"SINCE", b"1-Feb-1994", b"MODSEQ",
    b"BODY", b"BODY.PEEK", b"HEADER.FIELDS", b"HEADER.FIELDS.NOT", b"TEXT", b"MIME", b"FLAGS",
    b"+FLAGS.SILENT",
    b"\\Seen", b"\\Recent", b"USE", b"\\Sent", b"CHANGEDSINCE", b"UNCHANGEDSINCE", b"CONDSTORE",
    b"{3}\r\nabc", b"{2+}\r\nxy", b"~{1+}\r\n\x00", b"{0}\r\n", b'"17-Jul-1996 02:44:25 -0700"',
    b"&ZeVnLIqe-", b"&U,BTFw-&", b"\xc3\xa9", b"\xff", b"\x00", b"INBOX",
]  # fmt: skip
COMMANDS = [
    b"a ", b"a UID FETCH ", b"a FETCH 1 ", b"a FETCH 1 (", b"a UID SEARCH ", b"a SEARCH CHARSET UTF-8 ",
    b"a STORE 1 ", b"a APPEND INBOX ", b"a LIST ", b"a CREATE x ", b"a ID ", b"a LOGIN ", b"a STATUS x ",
    b"a SELECT ", b"a AUTHENTICATE PLAIN ", b"a UID COPY 1 ", b"a ENABLE ", b"a RENAME ",
]  # fmt: skip


@FUZZ
@given(st.sampled_from(COMMANDS), st.lists(st.sampled_from(TOKENS), max_size=40), chunks)
def test_grammar_pieces(start: bytes, tokens: list[bytes], sizes: list[int]) -> None:
    data = start + b"".join(tokens) + b"\r\n"
    parse_all(feed_in_chunks(Framer(), data, sizes))
    parse_all(feed_in_chunks(Framer(SMALL), data, sizes))


parts = st.lists(
    st.one_of(
        st.binary(max_size=30),
        st.sampled_from(TOKENS),
        st.builds(Literal, st.binary(max_size=10), st.booleans(), st.booleans()),
    ),
    max_size=12,
)


@FUZZ
@given(st.sampled_from(COMMANDS), parts)
def test_command_lines_built_by_hand(start: bytes, rest: list[bytes | Literal]) -> None:
    for line in (CommandLine((start, *rest)), CommandLine(tuple(rest))):
        try:
            parse_command(line)
        except ParseError:
            pass


def garbage_line(data: bytes) -> bytes:
    """A line of junk: no line end inside, and no literal announced at its end (the client would
    then send the literal, which is part of the junk command)."""
    line = data.replace(b"\n", b"").rstrip(b"}\r")
    return line + b"\r\n"


junk_commands = st.one_of(
    st.binary(max_size=300).map(garbage_line),
    # A junk command with non-synchronising literals sent in full, some of them too large.
    st.tuples(st.binary(max_size=20), st.lists(st.binary(max_size=150), max_size=6)).map(
        lambda junk: (
            b"".join(
                garbage_line(junk[0])[:-2] + b" {%d+}\r\n" % len(literal) + literal for literal in junk[1]
            )
            + garbage_line(junk[0])
        )
    ),
)


@FUZZ
@given(st.lists(junk_commands, max_size=5), chunks, st.booleans())
def test_resynchronisation(junk: list[bytes], sizes: list[int], small: bool) -> None:
    framer = Framer(SMALL if small else None)
    data = b"".join(junk) + b"z1 NOOP\r\nz2 UID fetch 1:* (FLAGS)\r\n"
    events = feed_in_chunks(framer, data, sizes)
    assert not any(isinstance(event, FramingError) and event.fatal for event in events)
    parse_all(events)
    last_two = [event for event in events if isinstance(event, CommandLine)][-2:]
    assert parse_command(last_two[0]) == Noop(tag="z1")
    assert isinstance(parse_command(last_two[1]), Fetch)
