"""Tests for mailserver.imap.envelope: ENVELOPE (RFC 3501 §7.4.2) and IMAP strings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.imap.envelope import (
    Address,
    envelope,
    imap_nstring,
    imap_string,
    parse_address_list,
    parse_envelope,
)
from mailserver.imap.mime import parse_message


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


def env(header: str) -> bytes:
    return envelope(parse_message(crlf(header + "\n\nbody\n")))


def test_rfc3501_example() -> None:
    # The header behind the ENVELOPE example of RFC 3501 §7.4.2 (FETCH response example).
    message = crlf(
        "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\n"
        "From: Terry Gray <gray@cac.washington.edu>\n"
        "Subject: IMAP4rev1 WG mtg summary and minutes\n"
        "To: imap@cac.washington.edu\n"
        "cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\n"
        "Message-Id: <B27397-0100000@cac.washington.edu>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
        "\n"
        "text\n"
    )
    assert envelope(parse_message(message)) == (
        b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'((NIL NIL "imap" "cac.washington.edu")) '
        b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) '
        b'NIL NIL "<B27397-0100000@cac.washington.edu>")'
    )


def test_all_fields() -> None:
    assert env(
        "Message-ID: <m@id>\n"
        "In-Reply-To: <r@id>\n"
        "Date: Fri, 1 Mar 2024 10:00:00 +0100\n"
        "Subject: all\n"
        "From: F <f@example.org>\n"
        "Sender: S <s@example.org>\n"
        "Reply-To: R <r@example.org>\n"
        "To: T <t@example.org>\n"
        "Cc: C <c@example.org>\n"
        "Bcc: B <b@example.org>"
    ) == (
        b'("Fri, 1 Mar 2024 10:00:00 +0100" "all" (("F" NIL "f" "example.org")) '
        b'(("S" NIL "s" "example.org")) (("R" NIL "r" "example.org")) (("T" NIL "t" "example.org")) '
        b'(("C" NIL "c" "example.org")) (("B" NIL "b" "example.org")) "<r@id>" "<m@id>")'
    )


def test_missing_and_empty_fields() -> None:
    # Absent: NIL; present but empty: "" (RFC 3501 §7.4.2); empty Sender/Reply-To default to From.
    assert env("Subject:\nFrom: u@d (Real Name)\nSender:\nReply-To: \nTo:") == (
        b'(NIL "" (("Real Name" NIL "u" "d")) (("Real Name" NIL "u" "d")) (("Real Name" NIL "u" "d")) '
        b"NIL NIL NIL NIL NIL)"
    )
    assert envelope(parse_message(b"")) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"


def test_folding_is_removed_and_first_field_wins() -> None:
    assert env("Subject: a long\n  subject\nSubject: second\nFrom: A\n <a@b>").startswith(
        b'(NIL "a long  subject" (("A" NIL "a" "b"))'
    )


def test_encoded_words_are_kept_raw() -> None:
    out = env(
        "Subject: =?ISO-8859-1?Q?Caf=E9?= au lait\n"
        'From: =?UTF-8?B?QW5kcsOp?= <andre@example.org>, "=?utf-8?q?J=C3=B6rg?=" <j@example.org>'
    )
    assert out.startswith(
        b'(NIL "=?ISO-8859-1?Q?Caf=E9?= au lait" (("=?UTF-8?B?QW5kcsOp?=" NIL "andre" "example.org")'
        b'("=?utf-8?q?J=C3=B6rg?=" NIL "j" "example.org"))'
    )


def test_eight_bit_header_values() -> None:
    message = b"Subject: \xc3\xa9t\xc3\xa9\r\nFrom: J\xc3\xb6rg <j@example.org>\r\n\r\n"
    tree = parse_message(message)
    assert envelope(tree) == (
        b'(NIL {5}\r\n\xc3\xa9t\xc3\xa9 (({5}\r\nJ\xc3\xb6rg NIL "j" "example.org")) '
        b'(({5}\r\nJ\xc3\xb6rg NIL "j" "example.org")) (({5}\r\nJ\xc3\xb6rg NIL "j" "example.org")) '
        b"NIL NIL NIL NIL NIL)"
    )
    # With UTF8=ACCEPT, valid UTF-8 goes into quoted strings (RFC 6855 §3).
    assert envelope(tree, utf8=True).startswith(b'(NIL "\xc3\xa9t\xc3\xa9" (("J\xc3\xb6rg" NIL')
    # Invalid UTF-8 stays a literal even then.
    latin = parse_message(b"Subject: \xe9\r\n\r\n")
    assert envelope(latin, utf8=True).startswith(b"(NIL {1}\r\n\xe9 NIL")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("user@domain", [Address(None, None, b"user", b"domain")]),
        ("User Name <user@domain>", [Address(b"User Name", None, b"user", b"domain")]),
        ('"Doe, John" <j@x>', [Address(b"Doe, John", None, b"j", b"x")]),
        ('"say \\"hi\\"" <a@b>', [Address(b'say "hi"', None, b"a", b"b")]),
        ("user@domain (Real Name)", [Address(b"Real Name", None, b"user", b"domain")]),
        ("<@route1,@route2:user@domain>", [Address(None, b"@route1,@route2", b"user", b"domain")]),
        ('"john doe"@[192.0.2.1]', [Address(None, None, b"john doe", b"[192.0.2.1]")]),
        ("John Q. Public <jqp@x>", [Address(b"John Q. Public", None, b"jqp", b"x")]),
        ("john . doe @ example . org", [Address(None, None, b"john.doe", b"example.org")]),
        ("a@b,, ,c@d", [Address(None, None, b"a", b"b"), Address(None, None, b"c", b"d")]),
        ("bare", [Address(None, None, b"bare", b"MISSING_DOMAIN")]),
        ("Just A Name", [Address(b"Just A Name", None, b"MISSING_MAILBOX", b"MISSING_DOMAIN")]),
        ("<>", []),
        ("Name <@host>", [Address(b"Name", None, b"MISSING_MAILBOX", b"host")]),
        ("", []),
        (
            "undisclosed-recipients:;",
            [Address(None, None, b"undisclosed-recipients", None), Address(None, None, None, None)],
        ),
        (
            "Team: a@x, B <b@y>; c@z",
            [
                Address(None, None, b"Team", None),
                Address(None, None, b"a", b"x"),
                Address(b"B", None, b"b", b"y"),
                Address(None, None, None, None),
                Address(None, None, b"c", b"z"),
            ],
        ),
        # An unterminated group is closed.
        (
            "g: a@x",
            [
                Address(None, None, b"g", None),
                Address(None, None, b"a", b"x"),
                Address(None, None, None, None),
            ],
        ),
        # Unbalanced brackets and quotes do not raise.
        ('"unterminated <a@b', [Address(None, None, b"unterminated <a@b", b"MISSING_DOMAIN")]),
        ("Name <a@b", [Address(b"Name", None, b"a", b"b")]),
    ],
)
def test_parse_address_list(value: str, expected: list[Address]) -> None:
    assert list(parse_address_list(value.encode())) == expected


def test_groups_rendered() -> None:
    out = env("From: u@d\nTo: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\nCc: group:;, group2: (foo) ;")
    assert out == (
        b'(NIL NIL ((NIL NIL "u" "d")) ((NIL NIL "u" "d")) ((NIL NIL "u" "d")) '
        b'((NIL NIL "group" NIL)(NIL NIL "g1" "d1.org")(NIL NIL "g2" "d2.org")(NIL NIL NIL NIL)'
        b'(NIL NIL "group2" NIL)(NIL NIL "g3" "d3.org")(NIL NIL NIL NIL)) '
        b'((NIL NIL "group" NIL)(NIL NIL NIL NIL)(NIL NIL "group2" NIL)(NIL NIL NIL NIL)) NIL NIL NIL)'
    )


def test_parse_envelope_fields() -> None:
    parsed = parse_envelope(parse_message(crlf("From: a@b\nReply-To: c@d\nDate:  x \n\n")).header)
    assert parsed.date == b"x"
    assert parsed.sender == parsed.from_ == (Address(None, None, b"a", b"b"),)
    assert parsed.reply_to == (Address(None, None, b"c", b"d"),)
    assert parsed.subject is None and parsed.to == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"plain", b'"plain"'),
        (b"", b'""'),
        (b'a "quoted" \\ word', b'"a \\"quoted\\" \\\\ word"'),
        (b"tab\there", b'"tab\there"'),
        (b"line\r\nbreak", b"{11}\r\nline\r\nbreak"),
        (b"caf\xc3\xa9", b"{5}\r\ncaf\xc3\xa9"),
        (b"nul\x00byte", b'"nulbyte"'),
    ],
)
def test_imap_string(value: bytes, expected: bytes) -> None:
    assert imap_string(value) == expected


def test_imap_string_utf8_and_nstring() -> None:
    assert imap_string(b"caf\xc3\xa9", utf8=True) == b'"caf\xc3\xa9"'
    assert imap_string(b"caf\xc3\xa9\r\n", utf8=True) == b"{7}\r\ncaf\xc3\xa9\r\n"
    assert imap_nstring(None) == b"NIL"
    assert imap_nstring(b"NIL") == b'"NIL"'


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_address_fields_never_raise(value: bytes) -> None:
    for address in parse_address_list(value):
        address.render()
    header = b"From: " + value + b"\r\nTo: " + value + b"\r\nSubject: " + value + b"\r\n\r\n"
    assert envelope(parse_message(header)).startswith(b"(")
