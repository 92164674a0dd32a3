"""``BODY[section]<partial>`` and the RFC822 items (RFC 3501 §6.4.5), as exact message octets.

A section is a part number (empty for the whole message) and an optional text specifier:

================  =====================================================================
``None``          the part's body; for the empty part number, the whole message
``"HEADER"``      the header block of the message, or of a message/rfc822 part's message
``"HEADER.FIELDS"``  only the named fields (case-insensitive, message order, folding kept),
                  then the blank line
``"HEADER.FIELDS.NOT"``  every other field, then the blank line
``"TEXT"``        the body of the message, or of a message/rfc822 part's message
``"MIME"``        the MIME header block of a numbered part
================  =====================================================================

RFC 3501: the blank line ending the header is "included in all header fetches, except in the
case of a message which has no body and no blank line".  HEADER, TEXT and HEADER.FIELDS on a
numbered part that is not message/rfc822, and any part number that does not exist, give empty
data (as Dovecot does) — never an exception.  Part numbers follow :meth:`MimePart.find`.
"""

from __future__ import annotations

from collections.abc import Iterable

from mailserver.imap.mime import Header, MimePart

__all__ = [
    "SECTION_TEXTS",
    "apply_partial",
    "header_fields",
    "rfc822",
    "rfc822_header",
    "rfc822_size",
    "rfc822_text",
    "section_bytes",
    "section_span",
]

#: The section text specifiers, as the parser hands them over (upper case).
SECTION_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})


def header_fields(header: Header, names: Iterable[str], *, exclude: bool = False) -> bytes:
    """The fields of *header* named in *names* (or, with *exclude*, all others — lines that are
    not fields included), each as written, followed by the header's blank line if it has one."""
    wanted = {name.lower() for name in names}
    chunks: list[bytes] = []
    for field in header.fields:
        selected = field.name is not None and field.name.lower() in wanted
        if selected != exclude:
            chunks.append(header.field_bytes(field))
    chunks.append(header.separator())
    return b"".join(chunks)


def _resolve(tree: MimePart, part: tuple[int, ...], text: str | None) -> MimePart | None:
    """The entity whose header/body a section designates (``None``: empty result)."""
    target = tree.find(part) if part else tree
    if target is None:
        return None
    if part and text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"):
        return target.message  # only a message/rfc822 part has a header and text of its own
    return target


def section_span(tree: MimePart, part: tuple[int, ...], text: str | None) -> tuple[int, int] | None:
    """``(start, end)`` offsets of a contiguous section (any but HEADER.FIELDS[.NOT]) in the
    message buffer, so that large sections can be streamed without a copy; ``None`` when the
    section is empty.  Raises ValueError for HEADER.FIELDS[.NOT] or an unknown *text*."""
    text = text.upper() if text is not None else None
    if text is not None and text not in SECTION_TEXTS:
        raise ValueError(f"unknown section text: {text!r}")
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        raise ValueError(f"{text} is not a contiguous range")
    entity = _resolve(tree, part, text)
    if entity is None:
        return None
    if text is None:
        span = (entity.start, entity.end) if not part else (entity.body_start, entity.end)
    elif text == "TEXT":
        span = (entity.body_start, entity.end)
    elif text == "MIME":
        if not part:
            return None  # MIME needs a part number (RFC 3501 §6.4.5)
        span = (entity.start, entity.body_start)
    else:  # HEADER
        span = (entity.start, entity.body_start)
    return span if span[1] > span[0] else None


def apply_partial(data: bytes, origin: int | None, count: int | None) -> bytes:
    """``<origin.count>`` (RFC 3501 §6.4.5): *count* octets from *origin*; empty when *origin*
    is past the end, truncated when fewer remain.  ``None`` for both means the whole *data*."""
    if origin is None and count is None:
        return data
    start = max(origin or 0, 0)
    if start >= len(data):
        return b""
    if count is None:
        return data[start:]
    return data[start : start + max(count, 0)]


def section_bytes(
    message: bytes,
    tree: MimePart,
    part: tuple[int, ...] = (),
    text: str | None = None,
    fields: tuple[str, ...] = (),
    *,
    origin: int | None = None,
    count: int | None = None,
) -> bytes:
    """The octets of ``BODY[<part>.<text> (<fields>)]<origin.count>``.

    *message* is the buffer *tree* was parsed from (``tree.source``); *part* the part number
    (``()`` for the whole message); *text* one of :data:`SECTION_TEXTS` or ``None``; *fields*
    the field names of HEADER.FIELDS[.NOT].  Empty data for sections that do not exist.
    An unknown *text* raises ValueError (the parser should have refused it).
    """
    text = text.upper() if text is not None else None
    if text is not None and text not in SECTION_TEXTS:
        raise ValueError(f"unknown section text: {text!r}")
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        entity = _resolve(tree, part, text)
        if entity is None:
            return b""
        data = header_fields(entity.header, fields, exclude=text == "HEADER.FIELDS.NOT")
    else:
        span = section_span(tree, part, text)
        if span is None:
            return b""
        start, end = span
        data = message if start == 0 and end == len(message) else message[start:end]
    return apply_partial(data, origin, count)


def rfc822(message: bytes, tree: MimePart) -> bytes:
    """FETCH RFC822: the same as ``BODY[]`` (RFC 3501 §6.4.5)."""
    return section_bytes(message, tree)


def rfc822_header(message: bytes, tree: MimePart) -> bytes:
    """FETCH RFC822.HEADER: the same as ``BODY.PEEK[HEADER]``."""
    return section_bytes(message, tree, (), "HEADER")


def rfc822_text(message: bytes, tree: MimePart) -> bytes:
    """FETCH RFC822.TEXT: the same as ``BODY[TEXT]``."""
    return section_bytes(message, tree, (), "TEXT")


def rfc822_size(tree: MimePart) -> int:
    """FETCH RFC822.SIZE: the size of the message in octets."""
    return tree.end - tree.start
