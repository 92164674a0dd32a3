"""Tests for mailserver.imap.parser: IMAP4rev1 commands and extensions, as real clients send them."""

from __future__ import annotations

import typing
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.imap import parser
from mailserver.imap import searchkeys as sk
from mailserver.imap.framing import CommandLine, Framer, Literal
from mailserver.imap.parser import (
    BADCHARSET_CODE,
    Append,
    Authenticate,
    Capability,
    Check,
    Close,
    Command,
    Copy,
    Create,
    Delete,
    Enable,
    Examine,
    Expunge,
    Fetch,
    FetchAttribute,
    Id,
    Idle,
    List,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    Noop,
    ParseError,
    ParserLimits,
    QResync,
    Rename,
    Search,
    Section,
    Select,
    StartTls,
    Status,
    Store,
    Subscribe,
    Unselect,
    Unsubscribe,
    parse_command,
)
from mailserver.imap.sequence import SequenceSet


def frame(data: bytes) -> CommandLine:
    lines = [event for event in Framer().feed(data + b"\r\n") if isinstance(event, CommandLine)]
    assert len(lines) == 1
    return lines[0]


def parse(data: bytes, *, utf8_names: bool = False, limits: ParserLimits | None = None) -> Command:
    return parse_command(frame(data), utf8_names=utf8_names, limits=limits)


def fails(data: bytes, *, limits: ParserLimits | None = None) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(data, limits=limits)
    return info.value


def seq(text: str) -> SequenceSet:
    return SequenceSet.parse(text)


def att(name: str) -> FetchAttribute:
    return FetchAttribute(name)  # type: ignore[arg-type]


# -- tags, names, the line as a whole ------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"a1 CAPABILITY", Capability(tag="a1")),
        (b"a1 capability", Capability(tag="a1")),
        (b"A.2] NoOp", Noop(tag="A.2]")),
        (b"3 LOGOUT", Logout(tag="3")),
        (b"t STARTTLS", StartTls(tag="t")),
        (b"t CHECK", Check(tag="t")),
        (b"t CLOSE", Close(tag="t")),
        (b"t UNSELECT", Unselect(tag="t")),
        (b"t IDLE", Idle(tag="t")),
        (b"t NAMESPACE", Namespace(tag="t")),
        (b"t EXPUNGE", Expunge(tag="t")),
    ],
)
def test_commands_without_arguments(line: bytes, expected: Command) -> None:
    command = parse(line)
    assert command == expected
    assert command.name == type(expected).__name__.upper() or command.name == "STARTTLS"


def test_names() -> None:
    assert parse(b"a UID FETCH 1 FLAGS").name == "FETCH"
    assert Select.name == "SELECT" and StartTls.name == "STARTTLS" and Id.name == "ID"


@pytest.mark.parametrize(
    ("line", "tag", "reason"),
    [
        (b"", None, "empty command line"),
        (b" NOOP", None, "invalid tag"),
        (b"+ NOOP", None, "invalid tag"),
        (b"a+b NOOP", "a", "expected space"),
        (b"(a NOOP", None, "invalid tag"),
        (b"* NOOP", None, "invalid tag"),
        (b'"a" NOOP', None, "invalid tag"),
        (b"a", "a", "expected space"),
        (b"a ", "a", "expected command name"),
        (b"a  NOOP", "a", "expected command name"),
        (b"a FROB", "a", "unknown command FROB"),
        (b"a NOOP ", "a", "unexpected data at end of command"),
        (b"a NOOP extra", "a", "unexpected data at end of command"),
        (b"a UID NOOP", "a", "UID NOOP is not a command"),
        (b"a UID", "a", "expected space"),
    ],
)
def test_line_errors(line: bytes, tag: str | None, reason: str) -> None:
    error = fails(line)
    assert (error.tag, error.reason, error.status, error.code) == (tag, reason, "BAD", None)


def test_reason_is_safe_to_echo() -> None:
    error = ParseError("a", "bad \r\n* OK injected \x00" + "x" * 500)
    assert error.reason.isprintable() and error.reason.isascii() and len(error.reason) == 200


def test_argument_limit() -> None:
    flags = b" ".join(b"k%d" % i for i in range(50))
    assert isinstance(parse(b"a STORE 1 FLAGS (" + flags + b")"), Store)
    assert fails(b"a STORE 1 FLAGS (" + flags + b")", limits=ParserLimits(max_args=20)).reason == (
        "too many arguments"
    )


# -- strings -------------------------------------------------------------------------------------


def test_login_forms() -> None:
    assert parse(b"a LOGIN alice secret") == Login(tag="a", user="alice", password="secret")
    assert parse(b'a LOGIN "alice@example.org" "p a\\"s\\\\s"') == Login(
        tag="a", user="alice@example.org", password='p a"s\\s'
    )
    assert parse(b'a LOGIN {5}\r\nalice {8+}\r\npass\r\nw"') == Login(
        tag="a", user="alice", password='pass\r\nw"'
    )
    assert parse('a LOGIN "élodie" "mot de passe é"'.encode()) == Login(
        tag="a", user="élodie", password="mot de passe é"
    )
    assert parse(b'a LOGIN "" ""') == Login(tag="a", user="", password="")
    assert parse(b"a LOGIN x]y z") == Login(tag="a", user="x]y", password="z")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"a LOGIN alice", "expected space"),
        (b'a LOGIN "alice secret', "unterminated quoted string"),
        (b'a LOGIN "a\\lice" x', "invalid escape in quoted string"),
        (b'a LOGIN "a\rb" x', "invalid character in quoted string"),
        (b'a LOGIN "\xff" x', "invalid UTF-8 in user name"),
        (b"a LOGIN (alice) x", "expected user name"),
        (b"a LOGIN a%b x", "expected space"),
        (b"a LOGIN alice ~{3+}\r\nabc", "literal8 not supported here"),
    ],
)
def test_login_errors(line: bytes, reason: str) -> None:
    assert fails(line).reason == reason


def test_authenticate() -> None:
    assert parse(b"a AUTHENTICATE plain") == Authenticate(tag="a", mechanism="PLAIN")
    # RFC 4959 SASL-IR.
    assert parse(b"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==") == Authenticate(
        tag="a", mechanism="PLAIN", initial_response=b"\0alice\0secret"
    )
    assert parse(b"a AUTHENTICATE EXTERNAL =") == Authenticate(
        tag="a", mechanism="EXTERNAL", initial_response=b""
    )
    assert fails(b"a AUTHENTICATE PLAIN AGFsaWNl*").reason == "unexpected data at end of command"
    assert fails(b"a AUTHENTICATE PLAIN AGFsaWNlA").reason == "invalid base64 in initial response"
    assert fails(b"a AUTHENTICATE PLAIN ").reason == "expected initial response"


# -- mailboxes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "mailbox"),
    [
        (b"a SELECT INBOX", "INBOX"),
        (b"a SELECT inbox", "INBOX"),
        (b'a SELECT "InBoX"', "INBOX"),
        (b"a SELECT {5+}\r\niNbOx", "INBOX"),
        (b"a SELECT Inbox/Sub", "Inbox/Sub"),
        (b"a SELECT Entw&APw-rfe", "Entwürfe"),
        (b'a SELECT "~peter/mail/&U,BTFw-/&ZeVnLIqe-"', "~peter/mail/台北/日本語"),
        (b"a SELECT &-amp", "&amp"),
        ('a SELECT "Entwürfe"'.encode(), "Entwürfe"),  # raw UTF-8 (UTF8=ACCEPT clients)
        ("a SELECT Entwürfe".encode(), "Entwürfe"),
        (b'a SELECT "Sent Items"', "Sent Items"),
        (b'a SELECT ""', ""),
        (b"a SELECT a]b", "a]b"),
    ],
)
def test_mailbox_names(line: bytes, mailbox: str) -> None:
    assert parse(line) == Select(tag="a", mailbox=mailbox)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"a SELECT &U,BTFw-&ZeVnLIqe-", "adjacent modified BASE64 shifts in mailbox name"),
        (b"a SELECT a&b", "unterminated modified BASE64 in mailbox name"),
        (b"a SELECT &AGE-", "printable ASCII encoded in modified BASE64"),
        (b'a SELECT "\xc3("', "invalid UTF-8 in mailbox name"),
        (b"a SELECT {3+}\r\na\nb", "control character in mailbox name"),
        (b"a SELECT &AAA-", "control character in mailbox name"),
        (b"a SELECT a*", "unexpected data at end of command"),
        (b"a SELECT", "expected space"),
    ],
)
def test_bad_mailbox_names(line: bytes, reason: str) -> None:
    assert fails(line).reason == reason


def test_utf8_names_are_not_modified_utf7() -> None:
    # RFC 6855 §3: after ENABLE UTF8=ACCEPT, "&" is just "&".
    assert parse(b"a SELECT a&b", utf8_names=True) == Select(tag="a", mailbox="a&b")
    assert parse(b"a SELECT &APw-", utf8_names=True) == Select(tag="a", mailbox="&APw-")


def test_select_and_examine() -> None:
    # RFC 7162 §3.1.8.
    assert parse(b'a SELECT "INBOX" (CONDSTORE)') == Select(tag="a", mailbox="INBOX", condstore=True)
    assert parse(b"a EXAMINE Archive (condstore)") == Examine(tag="a", mailbox="Archive", condstore=True)
    assert parse(b"a EXAMINE Archive") == Examine(tag="a", mailbox="Archive")
    assert fails(b"a SELECT INBOX (FOO)").reason == "unsupported or repeated select parameter FOO"
    assert fails(b"a SELECT INBOX ()").reason == "expected select parameter"


def test_select_qresync_parameter() -> None:
    # RFC 7162 §3.2.5 and the examples of §3.2.5.2.
    assert parse(b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))") == Select(
        tag="A02", mailbox="INBOX", qresync=QResync(67890007, 20050715194045000, seq("41,43:211,214:541"))
    )
    command = parse(
        b"B04 EXAMINE INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500 15000,22000)))"
    )
    assert command == Examine(
        tag="B04",
        mailbox="INBOX",
        qresync=QResync(67890007, 90060115194045000, seq("1:29997"), (seq("5000,7500"), seq("15000,22000"))),
    )
    assert parse(b"a SELECT INBOX (QRESYNC (1 0 (1:3 5:7)))") == Select(
        tag="a", mailbox="INBOX", qresync=QResync(1, 0, None, (seq("1:3"), seq("5:7")))
    )
    both = parse(b"a SELECT INBOX (CONDSTORE QRESYNC (9 100))")
    assert both == Select(tag="a", mailbox="INBOX", condstore=True, qresync=QResync(9, 100))
    assert fails(b"a SELECT INBOX (QRESYNC (0 1))").status == "BAD"  # UIDVALIDITY is non-zero
    assert fails(b"a SELECT INBOX (QRESYNC (1))").status == "BAD"
    assert fails(b"a SELECT INBOX (QRESYNC (1 2) QRESYNC (1 2))").status == "BAD"


def test_fetch_vanished_modifier() -> None:
    # RFC 7162 §3.2.6: UID FETCH only, with CHANGEDSINCE.
    command = parse(b"a UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)")
    assert isinstance(command, Fetch) and command.vanished and command.changedsince == 12345
    assert (
        fails(b"a FETCH 1:5 (FLAGS) (CHANGEDSINCE 1 VANISHED)").reason
        == "VANISHED needs UID FETCH and CHANGEDSINCE"
    )
    assert fails(b"a UID FETCH 1:5 (FLAGS) (VANISHED)").status == "BAD"
    assert fails(b"a UID FETCH 1:5 (FLAGS) (VANISHED VANISHED CHANGEDSINCE 1)").status == "BAD"


def test_create() -> None:
    assert parse(b"a CREATE Projets/2024") == Create(tag="a", mailbox="Projets/2024")
    # RFC 6154 §3 CREATE-SPECIAL-USE.
    assert parse(b"a CREATE MySent (USE (\\sent \\Archive \\X-Custom))") == Create(
        tag="a", mailbox="MySent", special_use=("\\Sent", "\\Archive", "\\X-Custom")
    )
    assert parse(b"a CREATE x (USE ())") == Create(tag="a", mailbox="x")
    assert parse(b"a CREATE x (USE (\\Junk) USE (\\Trash \\Junk))") == Create(
        tag="a", mailbox="x", special_use=("\\Junk", "\\Trash")
    )
    assert fails(b"a CREATE x (USE (Sent))").reason == "expected special-use attribute"
    assert fails(b"a CREATE x (FOO (\\Sent))").reason == "unsupported create parameter"


def test_mailbox_commands() -> None:
    assert parse(b"a DELETE Old") == Delete(tag="a", mailbox="Old")
    assert parse(b'a RENAME "Old" New') == Rename(tag="a", old="Old", new="New")
    assert parse(b"a RENAME inbox Archive") == Rename(tag="a", old="INBOX", new="Archive")
    assert parse(b"a SUBSCRIBE Lists") == Subscribe(tag="a", mailbox="Lists")
    assert parse(b"a UNSUBSCRIBE Lists") == Unsubscribe(tag="a", mailbox="Lists")
    assert fails(b"a RENAME Old").reason == "expected space"


# -- LIST, LSUB, STATUS --------------------------------------------------------------------------


def test_list_basic() -> None:
    assert parse(b'a LIST "" *') == List(tag="a", reference="", patterns=("*",))
    assert parse(b'a LIST "" ""') == List(tag="a", reference="", patterns=("",))
    assert parse(b"a list ~/Mail/ %") == List(tag="a", reference="~/Mail/", patterns=("%",))
    assert parse(b'a LIST "" INBOX.%]*') == List(tag="a", reference="", patterns=("INBOX.%]*",))
    assert parse(b'a LIST "" "&ZeVnLIqe-/*"') == List(tag="a", reference="", patterns=("日本語/*",))
    # Patterns keep their case: matching INBOX is the session's business.
    assert parse(b'a LIST "" inbox') == List(tag="a", reference="", patterns=("inbox",))


def test_list_extended() -> None:
    # RFC 5258 and RFC 6154; Thunderbird sends the second form.
    assert parse(b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("*" "Lists/%") RETURN (CHILDREN)') == List(
        tag="a",
        reference="",
        patterns=("*", "Lists/%"),
        selection=frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}),
        returns=frozenset({"CHILDREN"}),
        extended=True,
    )
    assert parse(b'5 list (subscribed) "" "*" return (special-use)') == List(
        tag="5",
        reference="",
        patterns=("*",),
        selection=frozenset({"SUBSCRIBED"}),
        returns=frozenset({"SPECIAL-USE"}),
        extended=True,
    )
    assert parse(b'a LIST "" % RETURN (SUBSCRIBED STATUS (MESSAGES UNSEEN))') == List(
        tag="a",
        reference="",
        patterns=("%",),
        returns=frozenset({"SUBSCRIBED", "STATUS"}),
        status_items=("MESSAGES", "UNSEEN"),
        extended=True,
    )
    assert parse(b'a LIST () "" % RETURN ()') == List(tag="a", reference="", patterns=("%",), extended=True)
    assert parse(b'a LIST (SPECIAL-USE) "" *') == List(
        tag="a", reference="", patterns=("*",), selection=frozenset({"SPECIAL-USE"}), extended=True
    )


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'a LIST (RECURSIVEMATCH) "" *', "RECURSIVEMATCH needs another selection option"),
        (b'a LIST (REMOTE RECURSIVEMATCH) "" *', "RECURSIVEMATCH needs another selection option"),
        (b'a LIST (FOO) "" *', "unsupported selection option FOO"),
        (b'a LIST "" * RETURN (FOO)', "unsupported return option FOO"),
        (b'a LIST "" * RETURN (STATUS (MESSAGES) STATUS (UNSEEN))', "STATUS given twice"),
        (b'a LIST "" * RETURNS ()', "expected RETURN"),
        (b'a LIST "" ()', "expected mailbox pattern"),
        (b'a LIST ""', "expected space"),
    ],
)
def test_list_errors(line: bytes, reason: str) -> None:
    assert fails(line).reason == reason


def test_lsub() -> None:
    assert parse(b'a LSUB "" *') == Lsub(tag="a", reference="", pattern="*")
    assert parse(b"a LSUB #news. comp.mail.%") == Lsub(tag="a", reference="#news.", pattern="comp.mail.%")


def test_status() -> None:
    assert parse(b"a STATUS blurdybloop (UIDNEXT messages UIDNEXT)") == Status(
        tag="a", mailbox="blurdybloop", items=("UIDNEXT", "MESSAGES")
    )
    assert parse(b'a0005 STATUS "INBOX" (MESSAGES RECENT UIDVALIDITY UNSEEN HIGHESTMODSEQ)') == Status(
        tag="a0005", mailbox="INBOX", items=("MESSAGES", "RECENT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ")
    )
    assert fails(b"a STATUS x (SIZES)").reason == "unknown status item SIZES"
    assert fails(b"a STATUS x ()").reason == "expected status item"
    assert fails(b"a STATUS x MESSAGES").reason == "expected ("


# -- APPEND --------------------------------------------------------------------------------------


MESSAGE = b"From: a@b\r\nSubject: hi\r\n\r\nbody\r\n"


def test_append_forms() -> None:
    literal = b"{%d+}\r\n" % len(MESSAGE) + MESSAGE
    assert parse(b"a APPEND Drafts " + literal) == Append(tag="a", mailbox="Drafts", message=MESSAGE)
    assert parse(b"a APPEND Drafts (\\Seen \\draft $Label1 \\Seen) " + literal) == Append(
        tag="a", mailbox="Drafts", flags=("\\Seen", "\\Draft", "$Label1"), message=MESSAGE
    )
    when = datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7)))
    assert parse(b'a APPEND saved-messages () "17-Jul-1996 02:44:25 -0700" ' + literal) == Append(
        tag="a", mailbox="saved-messages", internal_date=when, message=MESSAGE
    )
    command = parse(b'a APPEND x " 7-jul-1996 02:44:25 +0000" ' + literal)
    assert isinstance(command, Append)
    assert command.internal_date == datetime(1996, 7, 7, 2, 44, 25, tzinfo=UTC)
    assert command.internal_date.utcoffset() == timedelta(0)


def test_append_synchronising_literal() -> None:
    framer = Framer()
    events = framer.feed(b"a APPEND INBOX {%d}\r\n" % len(MESSAGE))
    events += framer.feed(MESSAGE + b"\r\n")
    command = parse_command(events[-1])  # type: ignore[arg-type]
    assert command == Append(tag="a", mailbox="INBOX", message=MESSAGE)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'a APPEND x "message"', "invalid date-time"),
        (b"a APPEND x", "expected space"),
        (b"a APPEND x ", "expected literal"),
        (b"a APPEND x (\\Recent) {1+}\r\nx", "\\Recent cannot be set by clients"),
        (b"a APPEND x (\\Important) {1+}\r\nx", "unsupported system flag \\Important"),
        (b'a APPEND x "31-Feb-2024 00:00:00 +0000" {1+}\r\nx', "invalid date-time"),
        (b'a APPEND x "1-Feb-2024 24:00:00 +0000" {1+}\r\nx', "invalid date-time"),
        (b'a APPEND x "1-Feb-2024 00:00:00 +2400" {1+}\r\nx', "invalid date-time"),
        (b'a APPEND x "1-Feb-2024 00:00:00 +0060" {1+}\r\nx', "invalid date-time"),
        (b'a APPEND x "1-Foo-2024 00:00:00 +0000" {1+}\r\nx', "invalid date-time"),
        (b'a APPEND x "1-Feb-2024 00:00:00" {1+}\r\nx', "invalid date-time"),
        (b"a APPEND x ~{1+}\r\nx", "literal8 not supported here"),
        (b"a APPEND x {1+}\r\nx {1+}\r\ny", "unexpected data at end of command"),  # no MULTIAPPEND
    ],
)
def test_append_errors(line: bytes, reason: str) -> None:
    assert fails(line).reason == reason


# -- SEARCH --------------------------------------------------------------------------------------

D = date(1994, 2, 1)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (b"ALL", sk.All()),
        (b"ANSWERED", sk.Flag("\\Answered")),
        (b"BCC bob", sk.Bcc("bob")),
        (b"BEFORE 1-Feb-1994", sk.Before(D)),
        (b'BODY "hello world"', sk.Body("hello world")),
        (b"CC {3+}\r\nbob", sk.Cc("bob")),
        (b"DELETED", sk.Flag("\\Deleted")),
        (b"DRAFT", sk.Flag("\\Draft")),
        (b"FLAGGED", sk.Flag("\\Flagged")),
        (b"FROM Smith", sk.From("Smith")),
        (b'HEADER Message-ID "<x@y>"', sk.Header("Message-ID", "<x@y>")),
        (b'HEADER X-Spam ""', sk.Header("X-Spam", "")),
        (b"KEYWORD $Forwarded", sk.Keyword("$Forwarded")),
        (b"LARGER 1024", sk.Larger(1024)),
        (b"NEW", sk.New()),
        (b"NOT SEEN", sk.Not(sk.Flag("\\Seen"))),
        (b"OLD", sk.Old()),
        (b'ON "01-Feb-1994"', sk.On(D)),
        (b"OR SEEN FLAGGED", sk.Or(sk.Flag("\\Seen"), sk.Flag("\\Flagged"))),
        (b"RECENT", sk.Recent()),
        (b"SEEN", sk.Flag("\\Seen")),
        (b"SENTBEFORE 1-feb-1994", sk.SentBefore(D)),
        (b"SENTON 1-FEB-1994", sk.SentOn(D)),
        (b"SENTSINCE 1-Feb-1994", sk.SentSince(D)),
        (b"SINCE 1-Feb-1994", sk.Since(D)),
        (b"SMALLER 0", sk.Smaller(0)),
        (b'SUBJECT "R\xc3\xa9union"', sk.Subject("Réunion")),
        (b"TEXT x", sk.Text("x")),
        (b"TO alice@example.org", sk.To("alice@example.org")),
        (b"UID 1:*", sk.UidKey(seq("1:*"))),
        (b"UNANSWERED", sk.Flag("\\Answered", False)),
        (b"UNDELETED", sk.Flag("\\Deleted", False)),
        (b"UNDRAFT", sk.Flag("\\Draft", False)),
        (b"UNFLAGGED", sk.Flag("\\Flagged", False)),
        (b"UNKEYWORD Junk", sk.Keyword("Junk", False)),
        (b"UNSEEN", sk.Flag("\\Seen", False)),
        (b"2:4,7", sk.SequenceKey(seq("2:4,7"))),
        (b"*", sk.SequenceKey(seq("*"))),
        (b"MODSEQ 620162338", sk.ModSeq(620162338)),
        (b'MODSEQ "/flags/\\\\draft" all 620162338', sk.ModSeq(620162338, "/flags/\\draft", "all")),
        (b"OLDER 3600", sk.Older(3600)),
        (b"YOUNGER 60", sk.Younger(60)),
        (b"(SEEN)", sk.Flag("\\Seen")),
        (b"deleted from Smith", sk.And((sk.Flag("\\Deleted"), sk.From("Smith")))),
    ],
)
def test_search_keys(keys: bytes, expected: sk.SearchKey) -> None:
    assert parse(b"a SEARCH " + keys) == Search(tag="a", key=expected)


def test_search_structure() -> None:
    command = parse(b"a UID SEARCH OR (FROM alice SINCE 1-Feb-1994) NOT OR SEEN 1:3 (((TO bob))) UNDELETED")
    assert command == Search(
        tag="a",
        uid=True,
        key=sk.And(
            (
                sk.Or(
                    sk.And((sk.From("alice"), sk.Since(D))),
                    sk.Not(sk.Or(sk.Flag("\\Seen"), sk.SequenceKey(seq("1:3")))),
                ),
                sk.To("bob"),
                sk.Flag("\\Deleted", False),
            )
        ),
    )


def test_search_charset_and_return() -> None:
    assert parse(b'a SEARCH CHARSET utf-8 TEXT "\xc3\xa9t\xc3\xa9"') == Search(
        tag="a", charset="UTF-8", key=sk.Text("été")
    )
    assert parse(b'a SEARCH CHARSET "US-ASCII" ALL') == Search(tag="a", charset="US-ASCII", key=sk.All())
    # RFC 4731 ESEARCH.
    assert parse(b"a UID SEARCH RETURN (MIN COUNT) UNSEEN") == Search(
        tag="a", uid=True, key=sk.Flag("\\Seen", False), returns=frozenset({"MIN", "COUNT"})
    )
    assert parse(b"a SEARCH RETURN () CHARSET UTF-8 ALL") == Search(
        tag="a", charset="UTF-8", key=sk.All(), returns=frozenset({"ALL"})
    )
    assert fails(b"a SEARCH RETURN (SAVE) ALL").reason == "unsupported search return option SAVE"


def test_search_bad_charset_is_a_no() -> None:
    error = fails(b"a SEARCH CHARSET KOI8-R SUBJECT x")
    assert (error.tag, error.status, error.code) == ("a", "NO", BADCHARSET_CODE)
    assert BADCHARSET_CODE == "BADCHARSET (US-ASCII UTF-8)"


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        (b"", "expected search key"),
        (b"FOO", "unknown search key FOO"),
        (b"()", "expected search key"),
        (b"(SEEN", "expected space"),
        (b"SEEN)", "expected space"),
        (b"OR SEEN", "expected space"),
        (b"NOT", "expected space"),
        (b"SEEN  UNSEEN", "expected search key"),
        (b"SINCE 1994-02-01", "invalid date"),
        (b"SINCE 30-Feb-1994", "invalid date"),
        (b"SINCE 1-Feb-94", "invalid date"),
        (b"LARGER -1", "expected larger"),
        (b"LARGER 99999999999", "larger out of range"),
        (b"OLDER 0", "older must not be zero"),
        (b"UID 0:4", "invalid number in sequence set: '0'"),
        (b"KEYWORD \\Seen", "expected keyword"),
        (b"FROM", "expected space"),
        (b'HEADER "" "\xff"', "invalid UTF-8 in search string"),
        (b'MODSEQ "/flags/x" any 1', "invalid entry type"),
        (b"MODSEQ 9223372036854775808", "mod-sequence out of range"),
    ],
)
def test_search_errors(keys: bytes, reason: str) -> None:
    assert fails(b"a SEARCH " + keys).reason == reason


def test_search_nesting_limit() -> None:
    assert isinstance(parse(b"a SEARCH " + b"(" * 32 + b"ALL" + b")" * 32), Search)
    assert fails(b"a SEARCH " + b"(" * 33 + b"ALL" + b")" * 33).reason == "search keys nested too deeply"
    limits = ParserLimits(max_depth=2)
    assert fails(b"a SEARCH ((((ALL))))", limits=limits).reason == "search keys nested too deeply"


def test_deep_not_chains_do_not_recurse() -> None:
    command = parse(b"a SEARCH " + b"NOT " * 3000 + b"ALL")
    assert isinstance(command, Search)
    key = command.key
    depth = 0
    while isinstance(key, sk.Not):
        key, depth = key.key, depth + 1
    assert depth == 3000 and key == sk.All()
    assert fails(b"a SEARCH " + b"OR ALL " * 5000 + b"ALL").reason == "too many arguments"


# -- FETCH ---------------------------------------------------------------------------------------


def test_fetch_macros() -> None:
    fast = (att("FLAGS"), att("INTERNALDATE"), att("RFC822.SIZE"))
    assert parse(b"a FETCH 1:* FAST") == Fetch(tag="a", sequence_set=seq("1:*"), items=fast)
    assert parse(b"a FETCH 1 all") == Fetch(tag="a", sequence_set=seq("1"), items=(*fast, att("ENVELOPE")))
    assert parse(b"a FETCH 1 FULL") == Fetch(
        tag="a", sequence_set=seq("1"), items=(*fast, att("ENVELOPE"), att("BODY"))
    )
    assert fails(b"a FETCH 1 (ALL)").reason == "unknown fetch attribute ALL"


def test_fetch_simple_attributes() -> None:
    names = "ENVELOPE FLAGS INTERNALDATE RFC822 RFC822.HEADER RFC822.SIZE RFC822.TEXT BODY BODYSTRUCTURE"
    names += " UID MODSEQ"
    command = parse(b"a FETCH 2,4 (" + names.lower().encode() + b")")
    assert command == Fetch(tag="a", sequence_set=seq("2,4"), items=tuple(att(n) for n in names.split()))
    assert parse(b"a FETCH 1 BODYSTRUCTURE") == Fetch(
        tag="a", sequence_set=seq("1"), items=(att("BODYSTRUCTURE"),)
    )


def test_thunderbird() -> None:
    assert parse(b"5 UID fetch 1:* (FLAGS)") == Fetch(
        tag="5", uid=True, sequence_set=seq("1:*"), items=(att("FLAGS"),)
    )
    fields = (
        "From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To "
        "Content-Type Reply-To"
    )
    command = parse(
        b"9 UID fetch 5:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (" + fields.encode() + b")])"
    )
    assert isinstance(command, Fetch)
    header = FetchAttribute("BODY", Section((), "HEADER.FIELDS", tuple(fields.split())), peek=True)
    assert command.items == (att("UID"), att("RFC822.SIZE"), att("FLAGS"), header)
    assert header.response_name() == f"BODY[HEADER.FIELDS ({fields})]"
    assert not header.sets_seen
    assert parse(b"12 UID fetch 42 (UID RFC822.SIZE FLAGS BODY.PEEK[])") == Fetch(
        tag="12",
        uid=True,
        sequence_set=seq("42"),
        items=(att("UID"), att("RFC822.SIZE"), att("FLAGS"), FetchAttribute("BODY", Section(), peek=True)),
    )
    assert parse(b"13 uid store 42 +Flags (\\Seen)") == Store(
        tag="13", uid=True, sequence_set=seq("42"), mode="+", flags=("\\Seen",)
    )
    assert parse(b'3 select "INBOX" (CONDSTORE)') == Select(tag="3", mailbox="INBOX", condstore=True)


def test_mutt() -> None:
    fields = (
        "DATE FROM SENDER SUBJECT TO CC MESSAGE-ID REFERENCES CONTENT-TYPE CONTENT-DESCRIPTION "
        "IN-REPLY-TO REPLY-TO LINES LIST-POST X-LABEL"
    )
    command = parse(
        b"a0006 UID FETCH 1:4294967295 (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS ("
        + fields.encode()
        + b")])"
    )
    assert isinstance(command, Fetch) and command.uid
    assert command.sequence_set == seq("1:4294967295")
    assert command.items[-1] == FetchAttribute(
        "BODY", Section((), "HEADER.FIELDS", tuple(fields.split())), True
    )
    assert parse(b"a0010 UID STORE 3 +FLAGS.SILENT (\\Deleted)") == Store(
        tag="a0010", uid=True, sequence_set=seq("3"), mode="+", silent=True, flags=("\\Deleted",)
    )
    assert parse(b"a0011 UID FETCH 3 BODY.PEEK[]") == Fetch(
        tag="a0011", uid=True, sequence_set=seq("3"), items=(FetchAttribute("BODY", Section(), peek=True),)
    )


def test_apple_mail() -> None:
    command = parse(b"5 UID FETCH 1:* (FLAGS UID) (CHANGEDSINCE 12)")
    assert command == Fetch(
        tag="5", uid=True, sequence_set=seq("1:*"), items=(att("FLAGS"), att("UID")), changedsince=12
    )
    assert isinstance(command, Fetch)
    assert command.effective_items == (att("FLAGS"), att("UID"), att("MODSEQ"))
    command = parse(
        b'2 ID ("name" "Mac OS X Mail" "version" "16.0 (3774)" "os" "macOS" "os-version" "14.4 (23E214)"'
        b' "vendor" "Apple Inc.")'
    )
    assert command == Id(
        tag="2",
        params={
            "name": "Mac OS X Mail",
            "version": "16.0 (3774)",
            "os": "macOS",
            "os-version": "14.4 (23E214)",
            "vendor": "Apple Inc.",
        },
    )
    assert parse(b"8 UID MOVE 22,24:26 Archive") == Move(
        tag="8", uid=True, sequence_set=seq("22,24:26"), mailbox="Archive"
    )


def test_effective_items() -> None:
    command = parse(b"a UID FETCH 1 FLAGS")
    assert isinstance(command, Fetch)
    assert command.effective_items == (att("FLAGS"), att("UID"))
    command = parse(b"a FETCH 1 FLAGS")
    assert isinstance(command, Fetch)
    assert command.effective_items == (att("FLAGS"),)


@pytest.mark.parametrize(
    ("item", "section", "response"),
    [
        (b"BODY[]", Section(), "BODY[]"),
        (b"BODY[HEADER]", Section((), "HEADER"), "BODY[HEADER]"),
        (b"body[text]", Section((), "TEXT"), "BODY[TEXT]"),
        (b"BODY[1]", Section((1,)), "BODY[1]"),
        (b"BODY[1.2.3]", Section((1, 2, 3)), "BODY[1.2.3]"),
        (b"BODY[4.2.HEADER]", Section((4, 2), "HEADER"), "BODY[4.2.HEADER]"),
        (b"BODY[3.mime]", Section((3,), "MIME"), "BODY[3.MIME]"),
        (b"BODY[2.TEXT]", Section((2,), "TEXT"), "BODY[2.TEXT]"),
        (
            b"BODY[header.fields (from to)]",
            Section((), "HEADER.FIELDS", ("from", "to")),
            "BODY[HEADER.FIELDS (from to)]",
        ),
        (
            b'BODY[1.HEADER.FIELDS.NOT ("Received" {4+}\r\nDate)]',
            Section((1,), "HEADER.FIELDS.NOT", ("Received", "Date")),
            "BODY[1.HEADER.FIELDS.NOT (Received Date)]",
        ),
        (
            b'BODY[HEADER.FIELDS ("X\\"Odd" a%b)]',
            Section((), "HEADER.FIELDS", ('X"Odd',)),
            None,
        ),
    ],
)
def test_sections(item: bytes, section: Section, response: str | None) -> None:
    if response is None:  # "a%b" is not an astring: refused
        assert fails(b"a FETCH 1 " + item).reason == "expected )"
        return
    command = parse(b"a FETCH 1 (" + item + b")")
    assert isinstance(command, Fetch)
    [attribute] = command.items
    assert attribute == FetchAttribute("BODY", section)
    assert attribute.response_name() == response
    assert attribute.sets_seen


def test_section_field_names_are_echoed_in_their_spelling() -> None:
    section = Section((), "HEADER.FIELDS", ('X"Odd', "A\\B", "Plain"))
    assert section.render() == 'HEADER.FIELDS ("X\\"Odd" "A\\\\B" Plain)'


def test_partial_fetch() -> None:
    command = parse(b"a FETCH 1 (BODY.PEEK[TEXT]<0.2048> BODY[]<100.50>)")
    assert isinstance(command, Fetch)
    first, second = command.items
    assert first == FetchAttribute("BODY", Section((), "TEXT"), peek=True, partial=(0, 2048))
    # RFC 3501 §7.4.2: the response echoes the origin only.
    assert first.response_name() == "BODY[TEXT]<0>"
    assert second.response_name() == "BODY[]<100>"


def test_response_names_of_plain_attributes() -> None:
    assert att("RFC822.HEADER").response_name() == "RFC822.HEADER"
    assert att("BODY").response_name() == "BODY"


def test_sets_seen() -> None:
    assert att("RFC822").sets_seen and att("RFC822.TEXT").sets_seen
    assert not att("RFC822.HEADER").sets_seen and not att("BODY").sets_seen and not att("FLAGS").sets_seen


def test_fetch_duplicates_are_dropped() -> None:
    command = parse(b"a FETCH 1 (FLAGS UID flags)")
    assert isinstance(command, Fetch) and command.items == (att("FLAGS"), att("UID"))


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        (b"()", "expected fetch attribute"),
        (b"(FLAGS", "expected )"),
        (b"BODY.PEEK", "unknown fetch attribute BODY.PEEK"),
        (b"BINARY[1]", "unknown fetch attribute BINARY"),
        (b"FLAGS[]", "unexpected data at end of command"),
        (b"BODY[MIME]", "MIME needs a part number"),
        (b"BODY[0]", "invalid section part"),
        (b"BODY[01]", "invalid section part"),
        (b"BODY[1.]", "invalid section"),
        (b"BODY[.1]", "invalid section"),
        (b"BODY[1..2]", "invalid section"),
        (b"BODY[TEXT.1]", "invalid section"),
        (b"BODY[HEADER.FIELDS]", "expected space"),
        (b"BODY[HEADER.FIELDS ()]", "expected header field name"),
        (b'BODY[HEADER.FIELDS ("")]', "invalid header field name"),
        (b'BODY[HEADER.FIELDS ("a:b")]', "invalid header field name"),
        (b"BODY[HEADER (x)]", "expected ]"),
        (b"BODY[FOO]", "invalid section"),
        (b"BODY[1]<0>", "expected ."),
        (b"BODY[1]<0.0>", "partial length must not be zero"),
        (b"BODY[1]<a.1>", "expected partial origin"),
        (b"BODY[", "expected ]"),
        (b"BODY<0.1>", "unknown fetch attribute BODY<0.1>"),
        (b"FLAGS (CHANGEDSINCE 0)", "mod-sequence must not be zero"),
        (b"FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)", "unsupported or repeated fetch modifier CHANGEDSINCE"),
        (b"FLAGS (VANISHED)", "VANISHED needs UID FETCH and CHANGEDSINCE"),
        (b"FLAGS ()", "expected fetch modifier"),
    ],
)
def test_fetch_errors(tail: bytes, reason: str) -> None:
    assert fails(b"a FETCH 1 " + tail).reason == reason


def test_fetch_sequence_errors() -> None:
    assert fails(b"a FETCH 0 FLAGS").reason == "invalid number in sequence set: '0'"
    assert fails(b"a FETCH FLAGS").reason == "expected sequence set"
    assert fails(b"a FETCH 1:2:3 FLAGS").reason == "invalid number in sequence set: '2:3'"


# -- STORE, COPY, MOVE, EXPUNGE ------------------------------------------------------------------

Mode = typing.Literal["+", "-", ""]


@pytest.mark.parametrize(
    ("item", "mode", "silent"),
    [
        (b"FLAGS", "", False),
        (b"flags.silent", "", True),
        (b"+FLAGS", "+", False),
        (b"+FLAGS.SILENT", "+", True),
        (b"-FLAGS", "-", False),
        (b"-Flags.Silent", "-", True),
    ],
)
def test_store_items(item: bytes, mode: str, silent: bool) -> None:
    assert parse(b"a STORE 2:4 " + item + b" (\\Deleted)") == Store(
        tag="a", sequence_set=seq("2:4"), mode=typing.cast(Mode, mode), silent=silent, flags=("\\Deleted",)
    )


def test_store_flags() -> None:
    assert parse(b"a STORE 1 FLAGS ()") == Store(tag="a", sequence_set=seq("1"), mode="", flags=())
    assert parse(b"a STORE 1 +FLAGS \\SEEN \\answered $MDNSent") == Store(
        tag="a", sequence_set=seq("1"), mode="+", flags=("\\Seen", "\\Answered", "$MDNSent")
    )
    # RFC 7162 §3.1.3.
    assert parse(b"a UID STORE 1:* (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)") == Store(
        tag="a",
        uid=True,
        sequence_set=seq("1:*"),
        mode="+",
        silent=True,
        flags=("\\Deleted",),
        unchangedsince=320162338,
    )
    assert parse(b"a STORE 1 (UNCHANGEDSINCE 0) FLAGS ()") == Store(
        tag="a", sequence_set=seq("1"), mode="", flags=(), unchangedsince=0
    )


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        (b"1 FLAG (\\Seen)", "expected FLAGS, +FLAGS or -FLAGS"),
        (b"1 FLAGS", "expected space"),
        (b"1 FLAGS (\\Recent)", "\\Recent cannot be set by clients"),
        (b"1 FLAGS (\\Foo)", "unsupported system flag \\Foo"),
        (b"1 FLAGS (a(b)", "expected )"),
        (b"1 FLAGS \\", "expected flag"),
        (b"1 (FOO 1) FLAGS ()", "unsupported store modifier FOO"),
        (b"1 (UNCHANGEDSINCE x) FLAGS ()", "expected mod-sequence"),
    ],
)
def test_store_errors(tail: bytes, reason: str) -> None:
    assert fails(b"a STORE " + tail).reason == reason


def test_copy_move_expunge() -> None:
    assert parse(b"a COPY 2:4 MEETING") == Copy(tag="a", sequence_set=seq("2:4"), mailbox="MEETING")
    assert parse(b'a UID COPY 1,3 "Sent Items"') == Copy(
        tag="a", uid=True, sequence_set=seq("1,3"), mailbox="Sent Items"
    )
    assert parse(b"a MOVE * inbox") == Move(tag="a", sequence_set=seq("*"), mailbox="INBOX")
    # RFC 4315 §2.1.
    assert parse(b"a UID EXPUNGE 3000:3002") == Expunge(tag="a", uid_set=seq("3000:3002"))
    assert fails(b"a UID EXPUNGE").reason == "expected space"
    assert fails(b"a EXPUNGE 1").reason == "unexpected data at end of command"
    assert fails(b"a COPY 1").reason == "expected space"


# -- ID, ENABLE ----------------------------------------------------------------------------------


def test_id() -> None:
    assert parse(b"a ID NIL") == Id(tag="a", params=None)
    assert parse(b"a ID ()") == Id(tag="a", params={})
    assert parse(b'a ID ("Name" "Thunderbird" "support-url" NIL)') == Id(
        tag="a", params={"name": "Thunderbird", "support-url": None}
    )
    assert fails(b"a ID").reason == "expected space"
    assert fails(b"a ID FOO").reason == "expected ID parameter list or NIL"
    assert fails(b'a ID ("name")').reason == "expected space"
    assert fails(b'a ID ("name" NO)').reason == "expected ID value"
    assert fails(b'a ID (name "x")').reason == "expected ID field"
    assert fails(b'a ID ("' + b"x" * 31 + b'" "y")').reason == "ID parameters too long"
    assert fails(b'a ID ("x" "' + b"y" * 1025 + b'")').reason == "ID parameters too long"
    pairs = b" ".join(b'"f%d" "v"' % i for i in range(31))
    assert fails(b"a ID (" + pairs + b")").reason == "ID parameters too long"


def test_enable() -> None:
    assert parse(b"a ENABLE CONDSTORE utf8=accept CONDSTORE") == Enable(
        tag="a", capabilities=("CONDSTORE", "UTF8=ACCEPT")
    )
    assert fails(b"a ENABLE").reason == "expected space"


def test_commands_are_frozen_and_hashable() -> None:
    command = parse(b"a FETCH 1 (FLAGS BODY[HEADER.FIELDS (From)])")
    assert hash(command) == hash(parse(b"a FETCH 1 (FLAGS BODY[HEADER.FIELDS (From)])"))
    with pytest.raises(AttributeError):
        command.tag = "b"  # type: ignore[misc]
    assert hash(parse(b'a ID ("name" "x")')) == hash(Id(tag="a", params={"other": "y"}))


def test_parts_built_by_hand() -> None:
    # Adjacent text parts are one text; literals stand where the framer cut them out.
    line = CommandLine((b"a LOG", b"IN ", Literal(b"alice", True), b" ", Literal(b"pw", False)))
    assert parse_command(line) == Login(tag="a", user="alice", password="pw")
    with pytest.raises(ParseError):
        parse_command(CommandLine(()))
    with pytest.raises(ParseError):
        parse_command(CommandLine((Literal(b"a", False), b" NOOP")))


# The common-FETCH shortcut ---------------------------------------------------------------------

_FETCH_ITEM_TEXTS = [*parser._COMMON_FETCH_ITEMS, b"(flags)", b"(BODY.PEEK[] FLAGS)", b"(FLAGS) ", b"(FLAGS"]


def _outcome(parse: typing.Callable[[], object]) -> object:
    try:
        return parse()
    except ParseError as exc:
        return ("error", exc.tag, exc.reason, exc.code, exc.status)


@settings(max_examples=400, deadline=None)
@given(
    tag=st.one_of(
        st.sampled_from([b"a1", b"A001", b"x.y", b"t]", b"+t", b"", b"a" * 257]),
        st.binary(min_size=1, max_size=6),
    ),
    uid=st.sampled_from([b"", b"UID ", b"uid ", b"Uid  "]),
    name=st.sampled_from([b"FETCH", b"fetch", b"FeTcH", b"FETCHX"]),
    sequence=st.text(alphabet="0123456789:,*", min_size=0, max_size=12).map(str.encode),
    items=st.sampled_from(_FETCH_ITEM_TEXTS),
    gap=st.sampled_from([b" ", b"  ", b""]),
)
def test_the_common_fetch_shortcut_parses_as_the_general_parser(
    tag: bytes, uid: bytes, name: bytes, sequence: bytes, items: bytes, gap: bytes
) -> None:
    line = CommandLine((tag + b" " + uid + name + b" " + sequence + gap + items,))
    assert _outcome(lambda: parse_command(line)) == _outcome(lambda: parser._parse_general(line, False, None))


def test_the_common_fetch_shortcut_serves_the_usual_forms_and_leaves_the_rest() -> None:
    line = CommandLine((b"A7 UID FETCH 5:9,12 (UID RFC822.SIZE BODY.PEEK[])",))
    assert parser._common_fetch(line, None) == parser._parse_general(line, False, None)
    for other in (
        b"A7 UID FETCH 5 (UID RFC822.SIZE BODY.PEEK[]) (CHANGEDSINCE 3)",  # a modifier
        b"A7 FETCH 5 (BODY.PEEK[3.HEADER])",  # not a common list
        b"A7 STORE 5 +FLAGS (\\Seen)",
    ):
        assert parser._common_fetch(CommandLine((other,)), None) is None
    # A literal anywhere, or limits below what the shortcut may take for granted: the general parser.
    assert parser._common_fetch(CommandLine((b"A7 FETCH 5 ", Literal(b"x", False), b"")), None) is None
    tight = ParserLimits(max_args=3)
    assert parser._common_fetch(CommandLine((b"A7 FETCH 5 (UID FLAGS)",)), tight) is None
    with pytest.raises(ParseError, match="too many arguments"):
        parse_command(CommandLine((b"A7 FETCH 5 (UID FLAGS)",)), limits=tight)
