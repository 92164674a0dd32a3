"""FETCH responses (``mailserver.imap.fetch``): the whole message (BODY[], BODY.PEEK[], RFC822)
is served as it is, without parsing its MIME structure, and reads exactly as the parsed path."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailserver.imap import fetch
from mailserver.imap.fetch import render_fetch, render_item, whole_message
from mailserver.imap.mime import parse_message
from mailserver.imap.parser import FetchAttribute, Section
from mailserver.store.mailboxes import MessageMeta

META = MessageMeta(7, 42, ("\\Seen",), datetime(2026, 11, 24, tzinfo=UTC), 0, 3, 9, True)
MESSAGES = [
    b"",
    b"Subject: no body",
    b"From: a@x.test\r\nSubject: plain\r\n\r\nHello\r\n",
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\n",
    b"From: a@x.test\nbare newlines\n\nand a body without CRLF",
]
WHOLE = [
    FetchAttribute("BODY", Section(), peek=True),
    FetchAttribute("BODY", Section()),
    FetchAttribute("BODY", Section(), peek=True, partial=(3, 10)),
    FetchAttribute("BODY", Section(), partial=(1000, 5)),
    FetchAttribute("RFC822"),
]
PARTS = [
    FetchAttribute("BODY", Section((1,)), peek=True),
    FetchAttribute("BODY", Section((), "HEADER"), peek=True),
    FetchAttribute("BODY", Section((), "TEXT")),
    FetchAttribute("RFC822.HEADER"),
    FetchAttribute("BODYSTRUCTURE"),
]


def _parsed(seq: int, items: list[FetchAttribute], content: bytes) -> bytes:
    """The response as rendered from the parsed tree, item by item."""
    tree = parse_message(content)
    return b"* %d FETCH (" % seq + b" ".join(render_item(i, META, tree) for i in items) + b")\r\n"


@pytest.mark.parametrize("content", MESSAGES)
def test_the_whole_message_reads_as_the_parsed_path_gives_it(content: bytes) -> None:
    for item in WHOLE:
        assert whole_message(item)
        assert render_fetch(5, META, [item], content) == _parsed(5, [item], content)
    mixed = [FetchAttribute("UID"), *WHOLE, *PARTS, FetchAttribute("FLAGS")]
    assert render_fetch(5, META, mixed, content) == _parsed(5, mixed, content)


def test_the_message_is_parsed_only_for_items_that_need_its_structure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = fetch.parse_message

    def counting(data: bytes):  # type: ignore[no-untyped-def]
        calls.append(len(data))
        return real(data)

    monkeypatch.setattr(fetch, "parse_message", counting)
    content = MESSAGES[3]
    render_fetch(1, META, [FetchAttribute("UID"), *WHOLE], content)
    assert calls == []
    render_fetch(1, META, [*WHOLE, *PARTS], content)
    assert calls == [len(content)]  # once, however many items need it
    assert not any(whole_message(item) for item in PARTS)
