"""Tests for mailserver.imap.wire: encoding of response strings, lists, names and dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from mailserver.imap.framing import CommandLine, Framer
from mailserver.imap.parser import Login, Select, parse_command
from mailserver.imap.wire import (
    astring,
    flag_list,
    format_datetime,
    imap_list,
    literal,
    mailbox,
    nstring,
    quote,
)


def test_quote() -> None:
    assert quote("hello world") == b'"hello world"'
    assert quote(b'say "hi" \\o/') == b'"say \\"hi\\" \\\\o/"'
    assert quote("") == b'""'
    assert quote("two\r\nlines") == b"{10}\r\ntwo\r\nlines"
    assert quote(b"nul\x00") == b"{4}\r\nnul\x00"
    # 8-bit only quoted once the client enabled UTF8=ACCEPT (RFC 6855), and only valid UTF-8.
    assert quote("été") == b"{5}\r\n\xc3\xa9t\xc3\xa9"
    assert quote("été", utf8=True) == '"été"'.encode()
    assert quote(b"\xff", utf8=True) == b"{1}\r\n\xff"


def test_literal() -> None:
    assert literal(b"") == b"{0}\r\n"
    assert literal(b"abc") == b"{3}\r\nabc"


def test_astring() -> None:
    assert astring("INBOX") == b"INBOX"
    assert astring("a]b") == b"a]b"
    assert astring("two words") == b'"two words"'
    assert astring("") == b'""'
    assert astring("nil") == b'"nil"'
    assert astring("50%") == b'"50%"'
    assert astring("{3}") == b'"{3}"'


def test_nstring() -> None:
    assert nstring(None) == b"NIL"
    assert nstring("NIL") == b'"NIL"'
    assert nstring(b"x") == b'"x"'


def test_lists_and_flags() -> None:
    assert imap_list([]) == b"()"
    assert imap_list([b"a", b'"b c"', b"(d)"]) == b'(a "b c" (d))'
    assert flag_list(["\\Seen", "$Forwarded"]) == b"(\\Seen $Forwarded)"
    assert flag_list([]) == b"()"


def test_mailbox() -> None:
    assert mailbox("INBOX") == b"INBOX"
    assert mailbox("Entwürfe") == b"Entw&APw-rfe"
    assert mailbox("~peter/mail/台北/日本語") == b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert mailbox("Sent Items") == b'"Sent Items"'
    assert mailbox("a&b") == b"a&-b"
    assert mailbox("Entwürfe", utf8=True) == '"Entwürfe"'.encode()
    assert mailbox("a&b", utf8=True) == b"a&b"


def test_format_datetime() -> None:
    assert format_datetime(datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7)))) == (
        b'"17-Jul-1996 02:44:25 -0700"'
    )
    # RFC 3501 §9 date-day-fixed: a space before a one-digit day.
    assert format_datetime(datetime(2024, 3, 5, 14, 7, 9, tzinfo=UTC)) == b'" 5-Mar-2024 14:07:09 +0000"'
    assert format_datetime(datetime(2024, 12, 31, 23, 59, 59)) == b'"31-Dec-2024 23:59:59 +0000"'
    india = timezone(timedelta(hours=5, minutes=30))
    assert format_datetime(datetime(2024, 1, 1, tzinfo=india)) == b'" 1-Jan-2024 00:00:00 +0530"'
    newfoundland = timezone(-timedelta(hours=3, minutes=30))
    assert format_datetime(datetime(2024, 1, 1, tzinfo=newfoundland)) == b'" 1-Jan-2024 00:00:00 -0330"'


def _parse(data: bytes) -> object:
    events = Framer().feed(data + b"\r\n")
    assert isinstance(events[-1], CommandLine)
    return parse_command(events[-1])


@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=20))
def test_strings_read_back(value: str) -> None:
    # What the server writes, the parser reads: astring both ways.
    assert _parse(b"a LOGIN " + astring(value, utf8=True) + b" " + quote(value)) == Login(
        tag="a", user=value, password=value
    )


@given(st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=20))
def test_mailbox_names_read_back(name: str) -> None:
    command = _parse(b"a SELECT " + mailbox(name))
    assert command == Select(tag="a", mailbox="INBOX" if name.upper() == "INBOX" else name)
