"""Tests for mailserver.imap.bodystructure: BODY and BODYSTRUCTURE (RFC 3501 §7.4.2)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.imap.bodystructure import body, body_structure, bodystructure
from mailserver.imap.mime import normalize_crlf, parse_message


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


# --- A minimal reader of IMAP data items, to check that output is well formed ---------------

_ATOM = re.compile(rb"[^\x00-\x20\x7f(){%*\"\\\]]+")
_QUOTED = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"')
_LITERAL = re.compile(rb"\{(\d+)\}\r\n")

Item = bytes | None | int | list["Item"]


def read_item(data: bytes, pos: int = 0) -> tuple[Item, int]:
    if data.startswith(b"(", pos):
        items: list[Item] = []
        pos += 1
        while not data.startswith(b")", pos):
            if items:
                assert data.startswith(b" ", pos) or data.startswith(b"(", pos), data[pos : pos + 20]
                if data.startswith(b" ", pos):
                    pos += 1
            item, pos = read_item(data, pos)
            items.append(item)
        return items, pos + 1
    if (match := _QUOTED.match(data, pos)) is not None:
        return re.sub(rb"\\(.)", rb"\1", match.group(1)), match.end()
    if (match := _LITERAL.match(data, pos)) is not None:
        end = match.end() + int(match.group(1))
        assert end <= len(data)
        return data[match.end() : end], end
    match = _ATOM.match(data, pos)
    assert match is not None, data[pos : pos + 20]
    atom = match.group()
    if atom == b"NIL":
        return None, match.end()
    assert atom.isdigit(), atom
    return int(atom), match.end()


def parse_imap(data: bytes) -> Item:
    item, end = read_item(data)
    assert end == len(data)
    return item


# --- Known-good outputs ---------------------------------------------------------------------


def rfc3501_example() -> bytes:
    """A message whose BODY is the example of RFC 3501 §7.4.2: a text part of 1152 octets in
    23 lines and a base64 text part of 4554 octets in 73 lines."""
    text = b"".join([b"x" * 48 + b"\r\n"] * 22) + b"y" * 52  # the last CRLF is the delimiter's
    encoded = b"".join([b"A" * 61 + b"\r\n"] * 72) + b"B" * 18
    assert (len(text), len(encoded)) == (1152, 4554)
    return (
        crlf(
            "From: Terry Gray <gray@cac.washington.edu>\n"
            "MIME-Version: 1.0\n"
            'Content-Type: MULTIPART/MIXED; BOUNDARY="x"\n'
            "\n"
            "--x\n"
            "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
            "Content-Transfer-Encoding: 7BIT\n"
            "\n"
        )
        + text
        + crlf(
            "\n--x\n"
            "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=cc.diff\n"
            "Content-ID: <960723163407.20117h@cac.washington.edu>\n"
            "Content-Description: Compiler diff\n"
            "Content-Transfer-Encoding: BASE64\n"
            "\n"
        )
        + encoded
        + crlf("\n--x--\n")
    )


def test_rfc3501_example_body() -> None:
    tree = parse_message(rfc3501_example())
    assert body(tree) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)'
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
        b'"<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) "MIXED")'
    )
    assert bodystructure(tree) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23 NIL NIL NIL NIL)'
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
        b'"<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73 NIL NIL NIL NIL) '
        b'"MIXED" ("BOUNDARY" "x") NIL NIL NIL)'
    )


def test_simple_text_message() -> None:
    tree = parse_message(crlf("Subject: x\n\nHello\nworld\n"))
    # No Content-Type: text/plain; charset=us-ascii (RFC 2045 §5.2).
    assert body(tree) == b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 14 2)'
    assert (
        bodystructure(tree) == b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 14 2 NIL NIL NIL NIL)'
    )


def test_message_without_body() -> None:
    tree = parse_message(b"Subject: no body")
    assert body(tree) == b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'


ALTERNATIVE = crlf(
    "From: Alice <alice@example.org>\n"
    "To: bob@example.org\n"
    "Subject: =?UTF-8?Q?R=C3=A9union?=\n"
    "Date: Mon, 4 Mar 2024 09:15:00 +0100\n"
    "MIME-Version: 1.0\n"
    'Content-Type: multipart/alternative; boundary="000000000000abcdef"\n'
    "\n"
    "--000000000000abcdef\n"
    'Content-Type: text/plain; charset="UTF-8"\n'
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "R=C3=A9union demain =C3=A0 10h.\n"
    "\n"
    "--000000000000abcdef\n"
    'Content-Type: text/html; charset="UTF-8"\n'
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    '<div dir=3D"ltr">R=C3=A9union demain =C3=A0 10h.</div>\n'
    "\n"
    "--000000000000abcdef--\n"
)


def test_multipart_alternative() -> None:
    # Part 1 body: "R=C3=A9union demain =C3=A0 10h.\r\n" (33 octets, 1 line);
    # part 2 body: '<div dir=3D"ltr">R=C3=A9union demain =C3=A0 10h.</div>\r\n' (56 octets, 1 line).
    assert bodystructure(parse_message(ALTERNATIVE)) == (
        b'(("text" "plain" ("charset" "UTF-8") NIL NIL "quoted-printable" 33 1 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "UTF-8") NIL NIL "quoted-printable" 56 1 NIL NIL NIL NIL) '
        b'"alternative" ("boundary" "000000000000abcdef") NIL NIL NIL)'
    )


ATTACHMENT = crlf(
    "From: a@example.org\n"
    "Subject: report\n"
    'Content-Type: multipart/mixed; boundary="=_b1"\n'
    "\n"
    "--=_b1\n"
    "Content-Type: text/plain; charset=iso-8859-1; format=flowed\n"
    "Content-Transfer-Encoding: 8bit\n"
    "\n"
    "See attached.\n"
    "--=_b1\n"
    'Content-Type: application/pdf; name="r\xe9sum\xe9.pdf"\n'
    "Content-Disposition: attachment;\n"
    " filename*=utf-8''r%C3%A9sum%C3%A9.pdf; size=12\n"
    "Content-Transfer-Encoding: base64\n"
    "Content-Language: fr\n"
    "Content-MD5: 1B2M2Y8AsgTpgAmY7PhCfg==\n"
    "\n"
    "JVBERi0xLjQK\n"
    "--=_b1--\n"
)


def test_multipart_mixed_with_base64_attachment() -> None:
    out = bodystructure(parse_message(ATTACHMENT))
    assert out == (
        b'(("text" "plain" ("charset" "iso-8859-1" "format" "flowed") NIL NIL "8bit" 13 1 NIL NIL NIL NIL)'
        b'("application" "pdf" ("name" {12}\r\nr\xc3\xa9sum\xc3\xa9.pdf) NIL NIL "base64" 12 '
        b'"1B2M2Y8AsgTpgAmY7PhCfg==" '
        b'("attachment" ("filename*" "utf-8\'\'r%C3%A9sum%C3%A9.pdf" "size" "12")) ("fr") NIL) '
        b'"mixed" ("boundary" "=_b1") NIL NIL NIL)'
    )
    parse_imap(out)


FORWARD = crlf(
    "From: Carol <carol@example.org>\n"
    "To: dave@example.org\n"
    "Subject: Fwd: minutes\n"
    "Content-Type: multipart/mixed; boundary=outer\n"
    "\n"
    "--outer\n"
    "Content-Type: text/plain\n"
    "\n"
    "FYI\n"
    "--outer\n"
    "Content-Type: message/rfc822\n"
    "Content-Disposition: inline\n"
    "\n"
    "From: Erin <erin@example.org>\n"
    "To: carol@example.org\n"
    "Subject: minutes\n"
    "Message-ID: <1@example.org>\n"
    "Content-Type: multipart/alternative; boundary=inner\n"
    "\n"
    "--inner\n"
    "Content-Type: text/plain\n"
    "\n"
    "text\n"
    "--inner\n"
    "Content-Type: text/html\n"
    "\n"
    "<p>text</p>\n"
    "--inner--\n"
    "\n"
    "--outer--\n"
)


def test_forwarded_message() -> None:
    tree = parse_message(FORWARD)
    inner = tree.children[1]
    assert inner.message is not None
    size = inner.size
    assert size == len(inner.message.raw())
    lines = inner.lines
    assert (size, lines) == (259, 15)
    assert bodystructure(tree) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1 NIL NIL NIL NIL)'
        b'("message" "rfc822" NIL NIL NIL "7bit" 259 '
        b'(NIL "minutes" (("Erin" NIL "erin" "example.org")) (("Erin" NIL "erin" "example.org")) '
        b'(("Erin" NIL "erin" "example.org")) ((NIL NIL "carol" "example.org")) NIL NIL NIL '
        b'"<1@example.org>") '
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 1 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 11 1 NIL NIL NIL NIL) '
        b'"alternative" ("boundary" "inner") NIL NIL NIL) 15 NIL ("inline" NIL) NIL NIL) '
        b'"mixed" ("boundary" "outer") NIL NIL NIL)'
    )
    assert body(tree) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1)'
        b'("message" "rfc822" NIL NIL NIL "7bit" 259 '
        b'(NIL "minutes" (("Erin" NIL "erin" "example.org")) (("Erin" NIL "erin" "example.org")) '
        b'(("Erin" NIL "erin" "example.org")) ((NIL NIL "carol" "example.org")) NIL NIL NIL '
        b'"<1@example.org>") '
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 1)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 11 1) "alternative") 15) "mixed")'
    )


def test_forwarded_message_size_by_hand() -> None:
    # The encapsulated message: these lines, each with its CRLF, through "--inner--"; the empty
    # line after it is the CRLF of the "--outer--" delimiter (RFC 2046 §5.1.1).
    lines = [
        "From: Erin <erin@example.org>",
        "To: carol@example.org",
        "Subject: minutes",
        "Message-ID: <1@example.org>",
        "Content-Type: multipart/alternative; boundary=inner",
        "",
        "--inner",
        "Content-Type: text/plain",
        "",
        "text",
        "--inner",
        "Content-Type: text/html",
        "",
        "<p>text</p>",
        "--inner--",
    ]
    assert sum(len(line) + 2 for line in lines) == 259 and len(lines) == 15


def test_dovecot_style_message_with_lf_line_ends() -> None:
    """The structure of Dovecot's imap-bodystructure unit test message: folded quoted boundary,
    all the extension fields, an invalid Content-Transfer-Encoding, nested message/rfc822 with
    prologue and epilogue.  Sizes are counted after CRLF normalization, as Dovecot reports them."""
    message = normalize_crlf(
        b"From: user@domain.org\n"
        b"Date: Sat, 24 Mar 2007 23:00:00 +0200\n"
        b"Mime-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="foo\n'
        b' bar"\n'
        b"\n"
        b"Root MIME prologue\n"
        b"\n"
        b"--foo bar\n"
        b'Content-Type: text/x-myown; charset=us-ascii; foo="quoted\\"string"\n'
        b"Content-ID: <foo@example.com>\n"
        b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
        b"Content-Disposition: inline; foo=bar\n"
        b"Content-Description: hellodescription\n"
        b"Content-Language: en, fi, se\n"
        b"Content-Location: http://example.com/test.txt\n"
        b"\n"
        b"hello\n"
        b"\n"
        b"--foo bar\n"
        b"Content-Type: message/rfc822\n"
        b"\n"
        b"From: sub@domain.org\n"
        b"To: sub-to1@domain.org, sub-to2@domain.org\n"
        b"Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
        b"Subject: submsg\n"
        b'Content-Type: multipart/alternative; boundary="sub1"\n'
        b"\n"
        b"Sub MIME prologue\n"
        b"--sub1\n"
        b"Content-Type: text/html\n"
        b"Content-Transfer-Encoding: 8bit\n"
        b"\n"
        b"<p>Hello world</p>\n"
        b"\n"
        b"--sub1\n"
        b"Content-Type: text/plain\n"
        b"Content-Transfer-Encoding: ?invalid\n"
        b"\n"
        b"Hello another world\n"
        b"\n"
        b"--sub1--\n"
        b"Sub MIME epilogue\n"
        b"\n"
        b"--foo bar--\n"
        b"Root MIME epilogue\n"
    )
    assert bodystructure(parse_message(message)) == (
        b'(("text" "x-myown" ("charset" "us-ascii" "foo" "quoted\\"string") "<foo@example.com>" '
        b'"hellodescription" "7bit" 7 1 "Q2hlY2sgSW50ZWdyaXR5IQ==" ("inline" ("foo" "bar")) '
        b'("en" "fi" "se") "http://example.com/test.txt")'
        b'("message" "rfc822" NIL NIL NIL "7bit" 412 ("Sun, 12 Aug 2012 12:34:56 +0300" "submsg" '
        b'((NIL NIL "sub" "domain.org")) ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub" "domain.org")) '
        b'((NIL NIL "sub-to1" "domain.org")(NIL NIL "sub-to2" "domain.org")) NIL NIL NIL NIL) '
        b'(("text" "html" ("charset" "us-ascii") NIL NIL "8bit" 20 1 NIL NIL NIL NIL)'
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 21 1 NIL NIL NIL NIL) '
        b'"alternative" ("boundary" "sub1") NIL NIL NIL) 21 NIL NIL NIL NIL) '
        b'"mixed" ("boundary" "foo bar") NIL NIL NIL)'
    )


def test_bare_lf_sizes_are_octets_as_stored() -> None:
    message = b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\ntwo\n--b--\n"
    assert (
        body(parse_message(message))
        == b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 7 2) "mixed")'
    )
    assert body(parse_message(normalize_crlf(message))) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 8 2) "mixed")'
    )


def test_multipart_without_parts_gets_an_empty_text_part() -> None:
    tree = parse_message(crlf("Content-Type: multipart/mixed\n\nno boundary\n"))
    assert body(tree) == b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed")'
    assert bodystructure(tree) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) '
        b'"mixed" NIL NIL NIL NIL)'
    )


def test_multipart_extension_data() -> None:
    tree = parse_message(
        crlf(
            'Content-Type: multipart/related; boundary=r; type="text/html"\n'
            "Content-Disposition: inline\n"
            "Content-Language: de\n"
            "Content-Location: http://example.org/\n"
            "\n--r\nContent-Type: text/html\n\n<p/>\n--r--\n"
        )
    )
    assert bodystructure(tree) == (
        b'(("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 4 1 NIL NIL NIL NIL) "related" '
        b'("boundary" "r" "type" "text/html") ("inline" NIL) ("de") "http://example.org/")'
    )


def test_sub_part_and_utf8() -> None:
    tree = parse_message(ATTACHMENT)
    assert body_structure(tree.children[0], extended=False) == (
        b'("text" "plain" ("charset" "iso-8859-1" "format" "flowed") NIL NIL "8bit" 13 1)'
    )
    assert b'("name" "r\xc3\xa9sum\xc3\xa9.pdf")' in bodystructure(tree, utf8=True)


def test_depth_bomb_is_well_formed() -> None:
    data = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(500)
    )
    out = bodystructure(parse_message(data))
    parse_imap(out)
    assert b'"application" "octet-stream"' in out


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"\r\n",
                b"--b\r\n",
                b"--b--\r\n",
                b"Content-Type: multipart/mixed; boundary=b\r\n",
                b"Content-Type: message/rfc822\r\n",
                b'Content-Type: text/plain; name="\xc3\xa9\r\n',
                b'Content-Disposition: x; a*0*=b; a*1="\r\n',
                b"Content-Language: (\r\n",
                b'From: "x" <a@b>, g:;\r\n',
                b"Subject: \x00\x7f\r\n",
                b"text",
                b"\xff",
            ]
        ),
        max_size=40,
    ).map(b"".join)
    | st.binary(max_size=300)
)
def test_output_is_always_well_formed(data: bytes) -> None:
    tree = parse_message(data)
    for extended in (True, False):
        for utf8 in (True, False):
            parse_imap(body_structure(tree, extended=extended, utf8=utf8))
