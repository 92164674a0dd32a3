"""FETCH responses (RFC 3501 §7.4.2): the data items of one message, rendered."""

from __future__ import annotations

from collections.abc import Sequence

from mailserver.imap import wire
from mailserver.imap.bodystructure import body, bodystructure
from mailserver.imap.envelope import envelope
from mailserver.imap.mime import MimePart, parse_message
from mailserver.imap.parser import FetchAttribute
from mailserver.imap.sections import apply_partial, rfc822, rfc822_header, rfc822_text, section_bytes
from mailserver.store.mailboxes import MessageMeta

_META_ONLY = frozenset({"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"})


def needs_content(items: Sequence[FetchAttribute]) -> bool:
    return any(item.name not in _META_ONLY for item in items)


def sets_seen(items: Sequence[FetchAttribute]) -> bool:
    return any(item.sets_seen for item in items)


def render_item(item: FetchAttribute, meta: MessageMeta, tree: MimePart | None) -> bytes:
    if item.name == "UID":
        return b"UID %d" % meta.uid
    if item.name == "FLAGS":
        return b"FLAGS " + wire.flag_list(meta.flags)
    if item.name == "INTERNALDATE":
        return b"INTERNALDATE " + wire.format_datetime(meta.internal_date)
    if item.name == "RFC822.SIZE":
        return b"RFC822.SIZE %d" % meta.size
    if item.name == "MODSEQ":
        return b"MODSEQ (%d)" % meta.modseq
    assert tree is not None, f"{item.name} needs the message"
    source = tree.source
    if item.name == "ENVELOPE":
        return b"ENVELOPE " + envelope(tree)
    if item.name == "BODYSTRUCTURE":
        return b"BODYSTRUCTURE " + bodystructure(tree)
    if item.name == "BODY" and item.section is None:
        return b"BODY " + body(tree)
    if item.name == "RFC822":
        return b"RFC822 " + wire.literal(rfc822(source, tree))
    if item.name == "RFC822.HEADER":
        return b"RFC822.HEADER " + wire.literal(rfc822_header(source, tree))
    if item.name == "RFC822.TEXT":
        return b"RFC822.TEXT " + wire.literal(rfc822_text(source, tree))
    section = item.section
    assert section is not None
    origin, count = item.partial if item.partial else (None, None)
    data = section_bytes(source, tree, section.part, section.text, section.fields, origin=origin, count=count)
    return item.response_name().encode("ascii") + b" " + wire.literal(data)


def render_fetch(
    seq: int, meta: MessageMeta, items: Sequence[FetchAttribute], content: bytes | None
) -> bytes:
    """``* seq FETCH (...)`` with CRLF. The message is parsed into its MIME tree only if an
    item needs it: ``BODY[]`` (a mail client's usual download) and ``RFC822`` are the message
    as it is."""
    tree: MimePart | None = None
    rendered: list[bytes] = []
    for item in items:
        if content is not None and whole_message(item):
            origin, count = item.partial if item.partial else (None, None)
            data = apply_partial(content, origin, count)
            rendered.append(item.response_name().encode("ascii") + b" " + wire.literal(data))
            continue
        if tree is None and content is not None and item.name not in _META_ONLY:
            tree = parse_message(content)
        rendered.append(render_item(item, meta, tree))
    return b"* %d FETCH (" % seq + b" ".join(rendered) + b")\r\n"


def whole_message(item: FetchAttribute) -> bool:
    """Whether ``item`` is the whole message, byte for byte (RFC 3501 §6.4.5: ``BODY[]``,
    ``BODY.PEEK[]``, ``RFC822``; with or without a partial range)."""
    if item.name == "RFC822":
        return True
    section = item.section
    return item.name == "BODY" and section is not None and not section.part and section.text is None


def flags_update(seq: int, meta: MessageMeta, *, uid: bool, modseq: bool) -> bytes:
    """The unsolicited ``* seq FETCH (FLAGS ...)`` that tells a client of a flag change."""
    parts = [b"FLAGS " + wire.flag_list(meta.flags)]
    if uid:
        parts.append(b"UID %d" % meta.uid)
    if modseq:
        parts.append(b"MODSEQ (%d)" % meta.modseq)
    return b"* %d FETCH (" % seq + b" ".join(parts) + b")\r\n"
