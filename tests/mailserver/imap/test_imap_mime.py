"""Tests for mailserver.imap.mime: MIME tree with exact octet ranges."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.imap.mime import (
    MAX_DEPTH,
    MAX_PARTS,
    MimePart,
    normalize_crlf,
    parse_content_params,
    parse_message,
    unfold,
)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


MIXED = crlf(
    "From: a@example.org\n"
    "Subject: test\n"
    "MIME-Version: 1.0\n"
    'Content-Type: multipart/mixed; boundary="=_outer"\n'
    "\n"
    "This is the preamble.\n"
    "--=_outer\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "\n"
    "Hello,\n"
    "world\n"
    "--=_outer\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "From: b@example.org\n"
    "Subject: inner\n"
    'Content-Type: multipart/alternative; boundary="=_inner"\n'
    "\n"
    "--=_inner\n"
    "Content-Type: text/plain\n"
    "\n"
    "plain\n"
    "--=_inner\n"
    "Content-Type: text/html\n"
    "\n"
    "<b>html</b>\n"
    "--=_inner--\n"
    "\n"
    "--=_outer\n"
    "Content-Type: application/octet-stream\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "AAEC\n"
    "--=_outer--\n"
    "epilogue\n"
)


def body_of(tree: MimePart, path: tuple[int, ...]) -> bytes:
    part = tree.find(path)
    assert part is not None, path
    return part.body_bytes()


def test_single_part_message() -> None:
    data = crlf("Subject: hi\n\nline 1\nline 2\n")
    tree = parse_message(data)
    assert tree.start == 0 and tree.end == len(data)
    assert data[tree.start : tree.body_start] == crlf("Subject: hi\n\n")
    assert tree.body_bytes() == crlf("line 1\nline 2\n")
    assert tree.content_type == "text/plain"
    assert (tree.media_type, tree.media_subtype, tree.params) == (b"text", b"plain", ())
    assert tree.encoding == b"7bit"
    assert tree.size == 16 and tree.lines == 2
    # RFC 3501 §6.4.5: a non-multipart message has one part, 1, the message itself.
    assert list(tree.walk()) == [((1,), tree)]
    assert tree.find((1,)) is tree
    assert tree.find((2,)) is None
    assert tree.find((1, 1)) is None
    assert tree.find(()) is tree


def test_multipart_offsets_and_numbering() -> None:
    tree = parse_message(MIXED)
    assert tree.is_multipart and len(tree.children) == 3
    assert [path for path, _ in tree.walk()] == [(1,), (2,), (2, 1), (2, 2), (3,)]
    # The line end before a delimiter belongs to the delimiter (RFC 2046 §5.1.1).
    assert body_of(tree, (1,)) == crlf("Hello,\nworld")
    assert body_of(tree, (2, 1)) == b"plain"
    assert body_of(tree, (2, 2)) == b"<b>html</b>"
    assert body_of(tree, (3,)) == b"AAEC"
    # The message/rfc822 part's body is the whole encapsulated message.
    inner = tree.find((2,))
    assert inner is not None and inner.is_message and inner.message is not None
    assert inner.body_bytes().startswith(b"From: b@example.org\r\n")
    assert inner.body_bytes().endswith(b"--=_inner--\r\n")
    assert inner.message.raw() == inner.body_bytes()
    assert inner.message.header.get("subject") == b"inner"
    # MIME headers of the parts.
    first = tree.find((1,))
    assert first is not None
    assert bytes(first.header_view()) == crlf("Content-Type: text/plain; charset=utf-8\n\n")
    assert first.charset == "utf-8"
    assert first.lines == 2
    attachment = tree.find((3,))
    assert attachment is not None and attachment.transfer_encoding == "base64"
    assert tree.find((4,)) is None
    assert tree.find((0,)) is None
    assert tree.find((2, 3)) is None
    # n.1 of a leaf part is that part (as in Dovecot); nothing deeper.
    assert tree.find((3, 1)) is attachment
    assert tree.find((3, 1, 1)) is None
    assert tree.find((2, 1, 1)) is tree.find((2, 1))


def test_top_level_message_rfc822() -> None:
    data = crlf("Content-Type: message/rfc822\n\nSubject: inner\n\nbody\n")
    tree = parse_message(data)
    assert tree.message is not None
    assert [path for path, _ in tree.walk()] == [(1,), (1, 1)]
    assert tree.find((1,)) is tree
    assert tree.find((1, 1)) is tree.message
    assert tree.message.body_bytes() == crlf("body\n")


def test_missing_close_delimiter_runs_to_end() -> None:
    data = crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b\n\ntwo\n")
    tree = parse_message(data)
    assert [c.body_bytes() for c in tree.children] == [b"one", crlf("two\n")]


def test_no_boundary_or_boundary_never_found() -> None:
    for header in ("Content-Type: multipart/mixed", "Content-Type: multipart/mixed; boundary=zz"):
        tree = parse_message(crlf(header + "\n\n--b\n\ntext\n"))
        assert tree.is_multipart and tree.children == ()
        assert list(tree.walk()) == []
        assert tree.find((1,)) is None


def test_delimiter_matching_is_exact() -> None:
    # "--bx" is not a delimiter for boundary "b"; transport padding after the boundary is fine;
    # a delimiter must start a line.
    data = crlf(
        "Content-Type: multipart/mixed; boundary=b\n\n"
        "--b \t\n\nfirst\n--bx\nnot a delimiter --b\n--b\n\nsecond\n--b--  trailing junk\nepilogue"
    )
    tree = parse_message(data)
    assert [c.body_bytes() for c in tree.children] == [crlf("first\n--bx\nnot a delimiter --b"), b"second"]


def test_empty_parts_and_adjacent_delimiters() -> None:
    data = crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n--b\n\nx\n--b--\n")
    tree = parse_message(data)
    assert len(tree.children) == 2
    first, second = tree.children
    assert first.raw() == b"" and first.size == 0 and first.lines == 0
    assert second.body_bytes() == b"x"


def test_multipart_digest_default_type() -> None:
    data = crlf(
        "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nbody one\n"
        "--d\nContent-Type: text/plain\n\nplain\n--d--\n"
    )
    tree = parse_message(data)
    digest_part, plain = tree.children
    assert digest_part.content_type == "message/rfc822" and digest_part.message is not None
    assert digest_part.message.header.get("Subject") == b"one"
    assert plain.content_type == "text/plain"


def test_invalid_content_type_defaults_to_text_plain() -> None:
    for value in ("garbage", "text/", "/plain", "", "multipart"):
        tree = parse_message(crlf(f"Content-Type: {value}\n\nbody"))
        assert tree.content_type == "text/plain", value
        assert tree.params == ()


def test_content_type_parameters() -> None:
    value = (
        b'Multipart/Mixed (comment) ; Boundary=----=_Part_1_2.3 ; charset="utf\\"8" (c);'
        b" junk; name=my file.pdf; empty=; x=us-ascii (Plain text)"
    )
    assert parse_content_params(value) == (
        b"Multipart/Mixed",
        (
            (b"Boundary", b"----=_Part_1_2.3"),
            (b"charset", b'utf"8'),
            (b"name", b"my file.pdf"),
            (b"empty", b""),
            (b"x", b"us-ascii"),
        ),
    )
    assert parse_content_params(b"attachment; filename=a.txt") == (b"attachment", ((b"filename", b"a.txt"),))
    assert parse_content_params(b"(only a comment)") is None


def test_rfc2231_continuations_are_merged() -> None:
    value = b"attachment; filename*0*=utf-8''caf; filename*1*=%C3%A9.txt; size=3; title*1=b; title*0=a"
    assert parse_content_params(value) == (
        b"attachment",
        ((b"filename*", b"utf-8''caf%C3%A9.txt"), (b"size", b"3"), (b"title", b"ab")),
    )
    # A gap in the sections: only the consecutive run from 0 is merged... and without 0, none.
    assert parse_content_params(b"a; n*1=x; n*2=y") == (b"a", ((b"n*1", b"x"), (b"n*2", b"y")))
    assert parse_content_params(b"a; n*=utf-8''%41") == (b"a", ((b"n*", b"utf-8''%41"),))


def test_mime_fields() -> None:
    data = crlf(
        "Content-Type: text/plain; charset=us-ascii\n"
        "Content-ID:\n <id@example.org>\n"
        "Content-Description: a\n  description\n"
        "Content-Transfer-Encoding: (comment) QUOTED-PRINTABLE\n"
        "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
        'Content-Disposition: attachment; filename="x.txt"\n'
        "Content-Language: en-GB, (comment) fr\n"
        "Content-Location: http://example.org/x.txt\n"
        "\n"
        "body"
    )
    part = parse_message(data)
    assert part.content_id == b"<id@example.org>"
    assert part.description == b"a  description"
    assert part.encoding == b"QUOTED-PRINTABLE" and part.transfer_encoding == "quoted-printable"
    assert part.md5 == b"Q2hlY2sgSW50ZWdyaXR5IQ=="
    assert part.disposition == (b"attachment", ((b"filename", b"x.txt"),))
    assert part.language == (b"en-GB", b"fr")
    assert part.location == b"http://example.org/x.txt"


def test_invalid_transfer_encoding_is_7bit() -> None:
    assert parse_message(crlf("Content-Transfer-Encoding: ?invalid\n\nx")).encoding == b"7bit"


def test_header_fields() -> None:
    data = crlf("Subject: one\n\ttwo\nObsolete-Form : value\nnot a field line\nX-Empty:\n\nbody\n")
    header = parse_message(data).header
    names = [f.name for f in header.fields]
    assert names == ["Subject", "Obsolete-Form", None, "X-Empty"]
    subject = header.fields[0]
    assert header.field_bytes(subject) == crlf("Subject: one\n\ttwo\n")
    assert header.raw_value(subject) == b" one\r\n\ttwo"
    assert header.get("SUBJECT") == b"one\ttwo"
    assert header.get("obsolete-form") == b"value"
    assert header.get("X-Empty") == b""
    assert header.get("Missing") is None
    assert header.separator() == b"\r\n"
    assert b"".join(header.field_bytes(f) for f in header.fields) + header.separator() == header.raw()


def test_header_starting_with_continuation_and_no_body() -> None:
    data = b"  leading\r\nSubject: x"
    tree = parse_message(data)
    assert [f.name for f in tree.header.fields] == [None, "Subject"]
    assert tree.header.get("Subject") == b"x"
    assert not tree.header.has_separator
    assert tree.body_start == tree.end == len(data)
    assert tree.size == 0 and tree.lines == 0


def test_empty_header_and_empty_message() -> None:
    tree = parse_message(b"\r\nbody")
    assert tree.header.fields == () and tree.header.raw() == b"\r\n" and tree.body_bytes() == b"body"
    empty = parse_message(b"")
    assert (empty.start, empty.body_start, empty.end) == (0, 0, 0)
    assert empty.content_type == "text/plain"


def test_bare_lf_message() -> None:
    data = b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\none\ntwo\n--b--\n"
    tree = parse_message(data)
    (part,) = tree.children
    assert part.body_bytes() == b"one\ntwo"
    assert part.size == 7 and part.lines == 2
    assert part.header.raw() == b"Content-Type: text/plain\n\n"


def test_lines_count_last_line_without_line_end() -> None:
    assert parse_message(b"\r\na\r\nb").lines == 2
    assert parse_message(b"\r\na\r\nb\r\n").lines == 2
    assert parse_message(b"\r\n\r\n").lines == 1


def test_normalize_crlf() -> None:
    assert normalize_crlf(b"a\r\nb") == b"a\r\nb"
    assert normalize_crlf(b"a\nb\rc\r\n\n") == b"a\r\nb\r\nc\r\n\r\n"
    data = b"x\r\n" * 3
    assert normalize_crlf(data) is data


def test_unfold() -> None:
    assert unfold(b" a\r\n b\n\tc ") == b"a b\tc"


def test_depth_limit() -> None:
    levels = MAX_DEPTH + 10
    data = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(levels)
    )
    tree = parse_message(data + b"\r\nleaf")
    part = tree
    depth = 0
    while part.children:
        part = part.children[0]
        depth += 1
    assert depth == MAX_DEPTH
    assert part.opaque and part.content_type == "application/octet-stream"
    assert part.body_bytes().endswith(b"leaf")
    # message/rfc822 nesting is limited the same way.
    nested = parse_message(b"Content-Type: message/rfc822\r\n\r\n" * (MAX_DEPTH + 5))
    count = 0
    part = nested
    while part.message is not None:
        part = part.message
        count += 1
    assert count == MAX_DEPTH and part.opaque


def test_part_limit() -> None:
    data = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\nx\r\n" * (MAX_PARTS + 50)
    tree = parse_message(data)
    assert len(tree.children) == MAX_PARTS - 1
    assert tree.children[-1].end == len(data)  # the rest stays in the last part


def test_huge_header_is_cut_into_one_unnamed_run() -> None:
    data = b"X-A: 1\r\n" + b"junk line\r\n" * 200_000 + b"Subject: late\r\n"
    tree = parse_message(data)
    fields = tree.header.fields
    assert len(fields) < 200_000
    assert fields[-1].name is None and fields[-1].end == len(data)
    assert b"".join(tree.header.field_bytes(f) for f in fields) == data


def test_large_message_is_not_copied() -> None:
    payload = b"QUJD" * (6 * 1024 * 1024 // 4)  # 6 MB of base64 on one line
    data = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\ntext\r\n--b\r\n"
        b"Content-Transfer-Encoding: base64\r\nContent-Type: application/pdf\r\n\r\n"
        + payload
        + b"\r\n--b--\r\n"
    )
    tree = parse_message(data)
    assert tree.source is data
    attachment = tree.children[1]
    assert attachment.size == len(payload)
    assert attachment.body_view().obj is data


# --- Properties -----------------------------------------------------------------------------


def check_ranges(part: MimePart, start: int, end: int) -> None:
    assert start <= part.start <= part.body_start <= part.end <= end
    assert part.header.start == part.start and part.header.end == part.body_start
    fields = part.header.fields
    if fields:
        assert fields[0].start == part.start and fields[-1].end == part.header.separator_start
    for previous, following in itertools.pairwise(fields):
        assert previous.end == following.start
    position = part.body_start
    for child in part.children:
        assert child.start >= position
        check_ranges(child, part.body_start, part.end)
        position = child.end
    if part.message is not None:
        assert (part.message.start, part.message.end) == (part.body_start, part.end)
        check_ranges(part.message, part.body_start, part.end)
    assert part.lines >= 0 and part.size == part.end - part.body_start
    _ = (part.content_type, part.charset, part.transfer_encoding, part.is_text, part.param("name"))


MIME_ISH = st.lists(
    st.sampled_from(
        [
            b"\r\n",
            b"\n",
            b"--b",
            b"--b--",
            b"--c",
            b"Content-Type: multipart/mixed; boundary=b\r\n",
            b"Content-Type: multipart/digest; boundary=c\r\n",
            b"Content-Type: message/rfc822\r\n",
            b"Content-Type: text/plain; charset*0*=x; charset*1=y\r\n",
            b'Content-Disposition: attachment; filename="a\r\n',
            b" folded",
            b"Subject: x",
            b"(",
            b'"',
            b":",
            b"\xff",
        ]
    ),
    max_size=40,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=400), MIME_ISH))
def test_arbitrary_bytes_parse_consistently(data: bytes) -> None:
    tree = parse_message(data)
    check_ranges(tree, 0, len(data))
    for path, part in tree.walk():
        assert tree.find(path) is part


# A generated MIME tree, rendered, must parse back to exactly the same parts.


@dataclass
class Node:
    kind: str  # "leaf", "multipart", "message"
    body: bytes = b""
    children: tuple[Node, ...] = ()
    boundary: bytes = b""
    preamble: bytes = b""
    epilogue: bytes = b""

    def render(self) -> bytes:
        if self.kind == "leaf":
            return b"Content-Type: text/plain\r\n\r\n" + self.body
        if self.kind == "message":
            return b"Content-Type: message/rfc822\r\n\r\n" + self.children[0].render()
        dash = b"--" + self.boundary
        body = (self.preamble + b"\r\n" if self.preamble else b"") + dash + b"\r\n"
        body += (b"\r\n" + dash + b"\r\n").join(child.render() for child in self.children)
        body += b"\r\n" + dash + b"--" + (b"\r\n" + self.epilogue if self.epilogue else b"")
        return b"Content-Type: multipart/mixed; boundary=" + self.boundary + b"\r\n\r\n" + body

    def expected(self, prefix: tuple[int, ...]) -> list[tuple[tuple[int, ...], bytes]]:
        """(part number, BODY[part number]) for every part, in walk order."""
        if self.kind == "multipart":
            out: list[tuple[tuple[int, ...], bytes]] = []
            for number, child in enumerate(self.children, 1):
                out.extend(child.numbered((*prefix, number)))
            return out
        return self.numbered((*prefix, 1))

    def numbered(self, path: tuple[int, ...]) -> list[tuple[tuple[int, ...], bytes]]:
        if self.kind == "leaf":
            return [(path, self.body)]
        if self.kind == "message":
            return [(path, self.children[0].render()), *self.children[0].expected(path)]
        body = self.render().split(b"\r\n\r\n", 1)[1]
        out = [(path, body)]
        for number, child in enumerate(self.children, 1):
            out.extend(child.numbered((*path, number)))
        return out


TEXT = st.binary(max_size=20).map(lambda b: bytes(c for c in b if c not in b"-\r\n")) | st.sampled_from(
    [b"", b"line\r\n", b"a\r\n\r\nb", b"\r\n", b"x\r"]
)


def nodes() -> st.SearchStrategy[Node]:
    counter = iter(range(10**9))

    def boundary(_: object) -> bytes:
        return b"=_%d" % next(counter)

    leaf = TEXT.map(lambda body: Node("leaf", body=body))

    def extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        multipart = st.builds(
            lambda kids, b, pre, epi: Node(
                "multipart", children=tuple(kids), boundary=b, preamble=pre, epilogue=epi
            ),
            st.lists(children, min_size=1, max_size=4),
            st.just(None).map(boundary),
            TEXT,
            TEXT,
        )
        message = children.map(lambda inner: Node("message", children=(inner,)))
        return multipart | message

    return st.recursive(leaf, extend, max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(nodes())
def test_generated_trees_parse_back_exactly(node: Node) -> None:
    data = node.render()
    tree = parse_message(data)
    check_ranges(tree, 0, len(data))
    got = [(path, part.body_bytes()) for path, part in tree.walk()]
    assert got == node.expected(())
