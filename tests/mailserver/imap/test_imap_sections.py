"""Tests for mailserver.imap.sections: BODY[section]<partial> (RFC 3501 §6.4.5)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.imap.mime import parse_message
from mailserver.imap.sections import (
    apply_partial,
    header_fields,
    rfc822,
    rfc822_header,
    rfc822_size,
    rfc822_text,
    section_bytes,
    section_span,
)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


OUTER_HEADER = crlf(
    "Received: from a\n"
    "\tby b; Mon, 4 Mar 2024 10:00:00 +0000\n"
    "From: Carol <carol@example.org>\n"
    "Subject: Fwd: notes\n"
    "received: from c by d; Mon, 4 Mar 2024 09:59:00 +0000\n"
    "Content-Type: multipart/mixed; boundary=outer\n"
    "\n"
)
PART1_MIME = crlf("Content-Type: text/plain; charset=utf-8\n\n")
PART1_BODY = crlf("See below.\n")
INNER_HEADER = crlf(
    "From: Erin <erin@example.org>\nSubject: notes\nContent-Type: multipart/alternative; boundary=inner\n\n"
)
INNER_BODY = crlf("--inner\n\nplain\n--inner\nContent-Type: text/html\n\n<p>html</p>\n--inner--\n")
PART2_MIME = crlf("Content-Type: message/rfc822\n\n")
PART3_MIME = crlf("Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n")
PART3_BODY = b"AAECAw=="
OUTER_BODY = (
    b"preamble\r\n--outer\r\n"
    + PART1_MIME
    + PART1_BODY
    + b"\r\n--outer\r\n"
    + PART2_MIME
    + INNER_HEADER
    + INNER_BODY
    + b"\r\n--outer\r\n"
    + PART3_MIME
    + PART3_BODY
    + b"\r\n--outer--\r\n"
)
MESSAGE = OUTER_HEADER + OUTER_BODY


def fetch(part: tuple[int, ...] = (), text: str | None = None, fields: tuple[str, ...] = ()) -> bytes:
    return section_bytes(MESSAGE, parse_message(MESSAGE), part, text, fields)


def test_whole_message_header_and_text() -> None:
    assert fetch() == MESSAGE
    assert fetch((), "HEADER") == OUTER_HEADER
    assert fetch((), "TEXT") == OUTER_BODY
    assert fetch((), "MIME") == b""  # MIME needs a part number


def test_numbered_parts() -> None:
    assert fetch((1,)) == PART1_BODY
    assert fetch((1,), "MIME") == PART1_MIME
    assert fetch((2,)) == INNER_HEADER + INNER_BODY
    assert fetch((2,), "MIME") == PART2_MIME
    assert fetch((2,), "HEADER") == INNER_HEADER
    assert fetch((2,), "TEXT") == INNER_BODY
    assert fetch((2, 1)) == b"plain"
    assert fetch((2, 1), "MIME") == b"\r\n"  # a part with an empty header
    assert fetch((2, 2)) == b"<p>html</p>"
    assert fetch((2, 2), "MIME") == crlf("Content-Type: text/html\n\n")
    assert fetch((3,)) == PART3_BODY
    assert fetch((3,), "MIME") == PART3_MIME


def test_header_and_text_only_for_message_parts() -> None:
    assert fetch((1,), "HEADER") == b""
    assert fetch((1,), "TEXT") == b""
    assert fetch((1,), "HEADER.FIELDS", ("Content-Type",)) == b""
    assert fetch((2, 1), "HEADER") == b""


@pytest.mark.parametrize("part", [(4,), (0,), (1, 2), (2, 3), (2, 1, 2), (3, 1, 1), (9, 9, 9)])
def test_missing_parts_are_empty(part: tuple[int, ...]) -> None:
    for text in (None, "MIME", "HEADER", "TEXT", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        assert fetch(part, text, ("From",)) == b""


def test_header_fields() -> None:
    # Message order, names matched case-insensitively, folding kept, then the blank line.
    assert fetch((), "HEADER.FIELDS", ("RECEIVED", "subject")) == crlf(
        "Received: from a\n"
        "\tby b; Mon, 4 Mar 2024 10:00:00 +0000\n"
        "Subject: Fwd: notes\n"
        "received: from c by d; Mon, 4 Mar 2024 09:59:00 +0000\n"
        "\n"
    )
    assert fetch((), "HEADER.FIELDS.NOT", ("Received", "Content-Type")) == crlf(
        "From: Carol <carol@example.org>\nSubject: Fwd: notes\n\n"
    )
    assert fetch((), "HEADER.FIELDS", ("X-None",)) == b"\r\n"
    assert fetch((2,), "HEADER.FIELDS", ("subject",)) == crlf("Subject: notes\n\n")
    assert fetch((2,), "HEADER.FIELDS.NOT", ("subject", "content-type")) == crlf(
        "From: Erin <erin@example.org>\n\n"
    )
    # Lower-case section texts are accepted too.
    assert fetch((), "header.fields", ("from",)) == crlf("From: Carol <carol@example.org>\n\n")


def test_header_fields_junk_lines() -> None:
    tree = parse_message(crlf("A: 1\nnot a field\nB: 2\n\nbody"))
    assert header_fields(tree.header, ["b"]) == crlf("B: 2\n\n")
    assert header_fields(tree.header, ["b"], exclude=True) == crlf("A: 1\nnot a field\n\n")


def test_message_without_body_or_blank_line() -> None:
    # RFC 3501: the blank line is included "except in the case of a message which has no body
    # and no blank line".
    message = crlf("Subject: only a header\nFrom: a@b\n")
    tree = parse_message(message)
    assert section_bytes(message, tree, (), "HEADER") == message
    assert section_bytes(message, tree, (), "TEXT") == b""
    assert section_bytes(message, tree, (), "HEADER.FIELDS", ("from",)) == crlf("From: a@b\n")
    assert section_bytes(message, tree, (1,)) == b""
    unterminated = b"Subject: x"
    assert (
        section_bytes(unterminated, parse_message(unterminated), (), "HEADER.FIELDS", ("subject",))
        == unterminated
    )


def test_single_part_message_numbering() -> None:
    message = crlf("Subject: x\nContent-Type: text/plain\n\nbody\n")
    tree = parse_message(message)
    assert section_bytes(message, tree, (1,)) == crlf("body\n")
    assert section_bytes(message, tree, (1,), "MIME") == crlf("Subject: x\nContent-Type: text/plain\n\n")
    assert section_bytes(message, tree, (1,), "HEADER") == b""
    assert section_bytes(message, tree, (2,)) == b""


def test_bare_lf_message_keeps_its_octets() -> None:
    message = b"Subject: x\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b--\n"
    tree = parse_message(message)
    assert (
        section_bytes(message, tree, (), "HEADER")
        == b"Subject: x\nContent-Type: multipart/mixed; boundary=b\n\n"
    )
    assert section_bytes(message, tree, (), "HEADER.FIELDS", ("SUBJECT",)) == b"Subject: x\n\n"
    assert section_bytes(message, tree, (1,)) == b"one"
    assert section_bytes(message, tree, (1,), "MIME") == b"\n"


def test_partial() -> None:
    tree = parse_message(MESSAGE)
    assert section_bytes(MESSAGE, tree, origin=0, count=10) == MESSAGE[:10]
    assert section_bytes(MESSAGE, tree, (3,), origin=2, count=3) == b"ECA"
    assert section_bytes(MESSAGE, tree, (3,), origin=6, count=100) == b"=="
    assert section_bytes(MESSAGE, tree, (3,), origin=8, count=1) == b""
    assert section_bytes(MESSAGE, tree, (3,), origin=500) == b""
    assert section_bytes(MESSAGE, tree, (), "HEADER.FIELDS", ("subject",), origin=9) == crlf("Fwd: notes\n\n")
    assert apply_partial(b"abc", None, None) == b"abc"
    assert apply_partial(b"abc", 1, None) == b"bc"
    assert apply_partial(b"abc", 0, 0) == b""


def test_rfc822_items() -> None:
    tree = parse_message(MESSAGE)
    assert rfc822(MESSAGE, tree) is MESSAGE  # no copy of the whole message
    assert rfc822_header(MESSAGE, tree) == OUTER_HEADER
    assert rfc822_text(MESSAGE, tree) == OUTER_BODY
    assert rfc822_size(tree) == len(MESSAGE)


def test_section_span() -> None:
    tree = parse_message(MESSAGE)
    start, end = section_span(tree, (3,), None) or (0, 0)
    assert MESSAGE[start:end] == PART3_BODY
    assert section_span(tree, (), None) == (0, len(MESSAGE))
    assert section_span(tree, (7,), None) is None
    assert section_span(tree, (), "MIME") is None
    with pytest.raises(ValueError, match="contiguous"):
        section_span(tree, (), "HEADER.FIELDS")
    with pytest.raises(ValueError, match="unknown"):
        section_bytes(MESSAGE, tree, (), "BOGUS")


# --- Properties -----------------------------------------------------------------------------

MIME_ISH = st.lists(
    st.sampled_from(
        [
            b"\r\n",
            b"\n",
            b"--b",
            b"--b--",
            b"Content-Type: multipart/mixed; boundary=b\r\n",
            b"Content-Type: message/rfc822\r\n",
            b"Subject: s\r\n",
            b" cont\r\n",
            b"text",
            b"\x00\xff",
        ]
    ),
    max_size=40,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), MIME_ISH))
def test_sections_reassemble_the_message(data: bytes) -> None:
    tree = parse_message(data)
    # HEADER + TEXT is the message; every numbered part is its MIME header plus its body.
    assert section_bytes(data, tree, (), "HEADER") + section_bytes(data, tree, (), "TEXT") == data
    assert section_bytes(data, tree) == data
    # HEADER.FIELDS with every name, and HEADER.FIELDS.NOT with none, give back the header.
    names = tuple({f.name for f in tree.header.fields if f.name is not None})
    everything = section_bytes(data, tree, (), "HEADER.FIELDS.NOT", ())
    assert everything == section_bytes(data, tree, (), "HEADER")
    if all(f.name is not None for f in tree.header.fields):
        assert section_bytes(data, tree, (), "HEADER.FIELDS", names) == everything
    for path, part in tree.walk():
        mime = section_bytes(data, tree, path, "MIME")
        content = section_bytes(data, tree, path)
        if part is tree:  # part 1 of a single-part message: the message itself
            assert mime + content == data
        else:
            assert mime + content == data[part.start : part.end]
        if part.message is not None:
            assert (
                section_bytes(data, tree, path, "HEADER") + section_bytes(data, tree, path, "TEXT") == content
            )
        for text in (None, "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"):
            section_bytes(data, tree, (*path, 1), text, ("subject",), origin=1, count=5)
