"""The MIME structure of one RFC 5322 message, with exact octet ranges, for IMAP FETCH.

IMAP hands out parts of a message by number (RFC 3501 §6.4.5) and describes them in BODY and
BODYSTRUCTURE with sizes in octets and in lines (§7.4.2): both must be the exact octets of the
message as stored.  The stdlib ``email`` parser re-serialises what it parses, so it cannot give
those ranges, and its parameter access (``Message.get_params``) normalises what IMAP must report
as written (case, quoting, RFC 2231 sections).  So this module finds the header block and the
body of every entity itself, on the message buffer, and records them as offsets — a 25 MB
attachment is never copied, only sliced when a client fetches it — and parses the few
structured MIME fields (Content-Type, Content-Disposition...) with a tolerant tokenizer of its
own.  Header fields are split lazily: building the tree only scans each part's header for
``Content-*`` fields.

Structure
---------
:func:`parse_message` returns the root :class:`MimePart` (the whole message).  Every part has a
:class:`Header` (its header block, separating blank line included) and a body; a
``multipart/*`` part has ``children``; a ``message/rfc822`` (or ``message/global``, RFC 6532)
part has ``message``, the encapsulated message, itself a root-like :class:`MimePart`.

Boundaries (RFC 2046 §5.1.1): a delimiter line is ``--`` boundary, optional transport padding
(white space) and the line end; the close delimiter is the same with ``--`` appended (anything
after that on the line is ignored).  The line end *preceding* a delimiter line belongs to the
delimiter, not to the part before it.  Each multipart is split by its own boundary only; a
part whose close delimiter is missing ends where its parent range ends.

Robustness: nothing here raises on malformed input.  A multipart without a ``boundary``
parameter, or whose boundary never occurs, has no children.  Nesting deeper than
:data:`MAX_DEPTH`, and parts beyond :data:`MAX_PARTS` in one message, are not parsed: such a
multipart or message part is presented as an opaque ``application/octet-stream`` leaf (its
octets are untouched, only its description changes).

Line ends: LF and CRLF are both accepted; sizes and line counts are those of the octets as
given.  IMAP requires CRLF on the wire, so a store holding bare-LF messages should pass them
through :func:`normalize_crlf` first (then every offset is consistent with what is sent).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

__all__ = [
    "MAX_DEPTH",
    "MAX_FIELDS_SIZE",
    "MAX_PARTS",
    "Disposition",
    "Header",
    "HeaderField",
    "MimePart",
    "Params",
    "normalize_crlf",
    "parse_content_params",
    "parse_message",
    "unfold",
]

#: Deeper multipart / message/rfc822 nesting is not parsed (the part becomes an opaque leaf).
MAX_DEPTH = 50

#: At most this many parts are parsed in one message; the rest stays inside its parent part.
MAX_PARTS = 10_000

#: Header fields are split out of the first this many octets of a header block; anything
#: beyond (only in absurd or hostile messages) is kept as one unnamed line run.
MAX_FIELDS_SIZE = 1 << 20

#: Parameters of Content-Type or Content-Disposition, in order: ``(name, value)`` as written,
#: value unquoted; RFC 2231 continuations merged (see :func:`parse_content_params`).
Params = tuple[tuple[bytes, bytes], ...]

#: ``(disposition-type, params)`` of a Content-Disposition field (RFC 2183).
Disposition = tuple[bytes, Params]

# The empty line ending a header block: LF LF, LF CR LF (so CRLF CRLF too).
_HEADER_END = re.compile(rb"\n\r?\n")
# What may follow "--boundary" on a delimiter line: transport padding (RFC 2046 §5.1.1), then
# the line end or the end of the data.  A stray CR is tolerated.
_PADDING = re.compile(rb"[ \t\r]*(?:\n|\Z)")
_LINE_BREAK = re.compile(rb"\r?\n")
# A Content-* field at the start of a line, with its continuation lines.
_CONTENT_FIELD = re.compile(
    rb"^(content-[\x21-\x39\x3b-\x7e]*)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.M | re.I
)
_BARE_LINE_END = re.compile(rb"\r\n|\r|\n")
# One header field from the start of its line: RFC 5322 §3.6.8 field-name (printable ASCII
# except ":"; obsolete syntax allows white space before the colon), the rest of the line, and
# the continuation lines.  Without a valid name and colon, the line is kept as an unnamed run.
_FIELD = re.compile(rb"(?:([\x21-\x39\x3b-\x7e]+)[ \t]*:())?[^\n]*\n?(?:[ \t][^\n]*\n?)*")
# RFC 2045 §5.1 token (no tspecials, no space, no controls); 8-bit octets are tolerated.
_TOKEN = re.compile(rb'[^\x00-\x20\x7f()<>@,;:\\"/\[\]?=]+')
_WSP = b" \t"


def unfold(value: bytes) -> bytes:
    """A field value with its folding line breaks removed (RFC 5322 §2.2.3) and the surrounding
    white space stripped."""
    return _LINE_BREAK.sub(b"", value).strip(b" \t\r")


def normalize_crlf(data: bytes) -> bytes:
    """*data* with every bare LF and bare CR turned into CRLF (IMAP, like SMTP, speaks CRLF).

    Returns *data* itself when it has no bare line ends (the common case, counted at C speed)."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") == crlf and data.count(b"\r") == crlf:
        return data
    return _BARE_LINE_END.sub(b"\r\n", data)


class HeaderField(NamedTuple):
    """One header field: offsets into the message buffer.

    ``start:end`` is the whole field as written, continuation lines and final line end
    included; ``value_start:value_end`` is its value (after the colon, still folded, without the
    final line end).  ``name`` is the field name (trailing white space removed, Latin-1 decoded);
    it is ``None`` for a line that is not a field (no colon, or an invalid name): such lines are
    kept so that the header block can still be cut exactly.
    """

    name: str | None
    start: int
    value_start: int
    value_end: int
    end: int


class Header:
    """The header block of one entity: its fields and the blank line that ends it.

    ``start:end`` is the whole block, separator included; ``separator_start:end`` is the blank
    line (empty when the entity has no blank line: then it is all header and has no body).
    """

    __slots__ = ("_fields", "end", "separator_start", "source", "start")

    def __init__(self, source: bytes, start: int, limit: int) -> None:
        self.source = source
        self.start = start
        if source.startswith(b"\n", start, limit):
            self.separator_start, self.end = start, start + 1
        elif source.startswith(b"\r\n", start, limit):
            self.separator_start, self.end = start, start + 2
        else:
            match = _HEADER_END.search(source, start, limit)
            if match is None:
                self.separator_start = self.end = limit
            else:
                self.separator_start, self.end = match.start() + 1, match.end()
        self._fields: tuple[HeaderField, ...] | None = None

    @property
    def fields(self) -> tuple[HeaderField, ...]:
        """The fields, in order (split on first use: the structure of a message only needs the
        Content-* fields of each part, see :meth:`content_fields`)."""
        if self._fields is None:
            self._fields = _parse_fields(self.source, self.start, self.separator_start)
        return self._fields

    def content_fields(self) -> dict[str, bytes]:
        """``{lower-case name: unfolded value}`` of the first occurrence of each ``Content-*``
        field, found with one regular-expression scan (no per-field objects)."""
        found: dict[str, bytes] = {}
        end = min(self.separator_start, self.start + MAX_FIELDS_SIZE)
        for match in _CONTENT_FIELD.finditer(self.source, self.start, end):
            name = match.group(1).decode("latin-1").lower()
            if name not in found:
                found[name] = unfold(match.group(2))
        return found

    @property
    def has_separator(self) -> bool:
        return self.end > self.separator_start

    def raw(self) -> bytes:
        """The header block as written, blank line included."""
        return self.source[self.start : self.end]

    def separator(self) -> bytes:
        """The blank line ending the block (``b"\\r\\n"``, ``b"\\n"``), or ``b""``."""
        return self.source[self.separator_start : self.end]

    def field_bytes(self, field: HeaderField) -> bytes:
        return self.source[field.start : field.end]

    def raw_value(self, field: HeaderField) -> bytes:
        """The value of *field* as written (folded, not stripped)."""
        return self.source[field.value_start : field.value_end]

    def get_all(self, name: str) -> list[bytes]:
        """The unfolded, stripped values of every field called *name* (case-insensitive)."""
        wanted = name.lower()
        return [
            unfold(self.source[f.value_start : f.value_end])
            for f in self.fields
            if f.name is not None and f.name.lower() == wanted
        ]

    def get(self, name: str) -> bytes | None:
        """The unfolded, stripped value of the first field called *name*, or ``None``."""
        wanted = name.lower()
        for f in self.fields:
            if f.name is not None and f.name.lower() == wanted:
                return unfold(self.source[f.value_start : f.value_end])
        return None


def _parse_fields(source: bytes, start: int, limit: int) -> tuple[HeaderField, ...]:
    """Split ``source[start:limit]`` (a header block without its blank line) into fields."""
    fields: list[HeaderField] = []
    pos = start
    cutoff = start + MAX_FIELDS_SIZE
    match_field = _FIELD.match
    while pos < limit:
        if pos > cutoff:  # see MAX_FIELDS_SIZE: the rest is one unnamed run
            fields.append(_make_field(source, None, pos, pos, limit))
            break
        match = match_field(source, pos, limit)
        end = match.end() if match is not None else pos
        if end <= pos:  # cannot happen (no empty line inside a header block); be safe anyway
            newline = source.find(b"\n", pos, limit)
            end = limit if newline < 0 else newline + 1
        name = match.group(1) if match is not None else None
        if name is None or match is None:
            fields.append(_make_field(source, None, pos, pos, end))
        else:
            fields.append(_make_field(source, name.decode("latin-1"), pos, match.start(2), end))
        pos = end
    return tuple(fields)


def _make_field(source: bytes, name: str | None, start: int, value_start: int, end: int) -> HeaderField:
    value_end = end
    if value_end > value_start and source[value_end - 1] == 0x0A:
        value_end -= 1
        if value_end > value_start and source[value_end - 1] == 0x0D:
            value_end -= 1
    return HeaderField(name, start, value_start, value_end, end)


# --- Structured MIME fields (RFC 2045 §5.1, RFC 2183, RFC 2231) ----------------------------


def _skip_cfws(value: bytes, pos: int) -> int:
    """Skip white space and (nested) comments."""
    length = len(value)
    while pos < length:
        char = value[pos]
        if char in (0x20, 0x09, 0x0D, 0x0A):
            pos += 1
        elif char == 0x28:  # "(": a comment, possibly nested, with quoted-pairs
            depth = 0
            while pos < length:
                char = value[pos]
                if char == 0x5C:
                    pos += 2
                    continue
                if char == 0x28:
                    depth += 1
                elif char == 0x29:
                    depth -= 1
                    if depth == 0:
                        pos += 1
                        break
                pos += 1
        else:
            break
    return pos


def _quoted_string(value: bytes, pos: int) -> tuple[bytes, int]:
    """The content of the quoted string opening at ``value[pos]`` (quoted-pairs resolved) and
    the position after it; an unterminated string runs to the end."""
    out = bytearray()
    pos += 1
    length = len(value)
    while pos < length:
        char = value[pos]
        if char == 0x22:
            return bytes(out), pos + 1
        if char == 0x5C and pos + 1 < length:
            pos += 1
            char = value[pos]
        out.append(char)
        pos += 1
    return bytes(out), pos


def _token(value: bytes, pos: int) -> tuple[bytes, int]:
    match = _TOKEN.match(value, pos)
    if match is None:
        return b"", pos
    return match.group(), match.end()


def _strip_trailing_comment(value: bytes) -> bytes:
    """``us-ascii (Plain text)`` → ``us-ascii`` (RFC 2045 §5.1 allows comments there)."""
    if value.endswith(b")"):
        index = value.rfind(b" (")
        if index < 0:
            index = value.rfind(b"\t(")
        if index > 0:
            return value[:index].rstrip(_WSP)
    return value


def _parse_params(value: bytes, pos: int) -> list[tuple[bytes, bytes]]:
    """``; name=value`` pairs from *pos*.  Lenient: an unquoted value runs to the next ``;``
    (real mail has ``boundary=----=_Part_1`` and ``name=my file.pdf``), a parameter without
    ``=`` is skipped, junk before a ``;`` is ignored."""
    params: list[tuple[bytes, bytes]] = []
    length = len(value)
    while True:
        semicolon = value.find(b";", pos)
        if semicolon < 0:
            return params
        pos = _skip_cfws(value, semicolon + 1)
        name, pos = _token(value, pos)
        pos = _skip_cfws(value, pos)
        if not name or pos >= length or value[pos] != 0x3D:  # "="
            continue
        pos = _skip_cfws(value, pos + 1)
        if pos < length and value[pos] == 0x22:
            text, pos = _quoted_string(value, pos)
        else:
            end = value.find(b";", pos)
            end = length if end < 0 else end
            text = _strip_trailing_comment(value[pos:end].strip(b" \t\r\n"))
            pos = end
        params.append((name, text))


_SECTION = re.compile(rb"(.*?)\*(\d{1,3})", re.DOTALL)


def _merge_rfc2231(params: list[tuple[bytes, bytes]]) -> Params:
    """Merge RFC 2231 §3 continuations (``name*0``, ``name*1*``...) into one parameter.

    The merged parameter is called ``name*`` when any section is extended (its value keeps
    the ``charset'language'`` prefix and the %-encoding, undecoded), ``name`` otherwise; it
    takes the place of its first section.  Values are never decoded here: IMAP hands them to
    the client as written (the client decodes RFC 2231, as it decodes RFC 2047).
    """
    if not any(b"*" in name for name, _ in params):
        return tuple(params)
    order: list[bytes] = []  # output keys, by first appearance (lower-cased for grouping)
    plain: dict[bytes, list[tuple[bytes, bytes]]] = {}
    sections: dict[bytes, dict[int, tuple[bytes, bool]]] = {}
    display: dict[bytes, bytes] = {}
    for name, text in params:
        extended = name.endswith(b"*")
        base = name[:-1] if extended else name
        match = _SECTION.fullmatch(base)
        if match is None:
            key = name.lower()
            if key not in plain:
                plain[key] = []
                order.append(key)
            plain[key].append((name, text))
            continue
        stem = match.group(1)
        key = b"\x00" + stem.lower()
        if key not in sections:
            sections[key] = {}
            display[key] = stem
            order.append(key)
        sections[key].setdefault(int(match.group(2)), (text, extended))
    merged: list[tuple[bytes, bytes]] = []
    for key in order:
        if key in plain:
            merged.extend(plain[key])
            continue
        parts = sections[key]
        values: list[bytes] = []
        any_extended = False
        number = 0
        while number in parts:  # sections must be consecutive from 0 (RFC 2231 §3)
            text, extended = parts[number]
            values.append(text)
            any_extended = any_extended or extended
            number += 1
        if not values:  # no section 0: keep them as written
            merged.extend(
                (display[key] + b"*" + str(n).encode() + (b"*" if ext else b""), text)
                for n, (text, ext) in sorted(parts.items())
            )
            continue
        merged.append((display[key] + (b"*" if any_extended else b""), b"".join(values)))
    return tuple(merged)


def parse_content_params(value: bytes) -> tuple[bytes, Params] | None:
    """Parse a Content-Type (``type/subtype; params``) or Content-Disposition (``type;
    params``) value.  Returns ``(type, params)`` — for Content-Type, ``type`` is
    ``b"type/subtype"`` — or ``None`` when the value has no valid leading token(s).
    """
    value = _LINE_BREAK.sub(b"", value)
    pos = _skip_cfws(value, 0)
    first, pos = _token(value, pos)
    if not first:
        return None
    pos = _skip_cfws(value, pos)
    if pos < len(value) and value[pos] == 0x2F:  # "/"
        pos = _skip_cfws(value, pos + 1)
        second, pos = _token(value, pos)
        if not second:
            return None
        first = first + b"/" + second
    return first, _merge_rfc2231(_parse_params(value, pos))


def _parse_language(value: bytes) -> tuple[bytes, ...] | None:
    """Content-Language (RFC 3282): a comma-separated list of language tags."""
    value = _LINE_BREAK.sub(b"", value)
    tags: list[bytes] = []
    pos = 0
    length = len(value)
    while pos < length:
        pos = _skip_cfws(value, pos)
        tag, pos = _token(value, pos)
        if tag:
            tags.append(tag)
        pos = _skip_cfws(value, pos)
        comma = value.find(b",", pos)
        if comma < 0:
            break
        pos = comma + 1
    return tuple(tags) or None


# --- The tree ------------------------------------------------------------------------------


class MimePart:
    """One entity (the message, a body part, or an encapsulated message), with its octet ranges.

    Offsets index ``source``, the whole message buffer: ``start:body_start`` is the header
    block (blank line included), ``body_start:end`` the body.  The MIME attributes are the
    raw octets of the fields (unfolded, stripped), as IMAP reports them:

    * ``media_type`` / ``media_subtype``: as written; ``text``/``plain`` by default (RFC 2045
      §5.2; ``message``/``rfc822`` inside ``multipart/digest``, RFC 2046 §5.1.5).
    * ``params``: Content-Type parameters, values unquoted, RFC 2231 sections merged.
    * ``content_id``, ``description``, ``md5``, ``location``: the field values, or ``None``.
    * ``encoding``: the Content-Transfer-Encoding token, ``7bit`` when absent or invalid.
    * ``disposition``: ``(type, params)``; ``language``: the language tags.
    * ``children``: the parts of a multipart (possibly none); ``message``: the encapsulated
      message of a message/rfc822 part; ``depth``: 0 for the message, +1 per nesting level;
      ``opaque``: nesting or part limit reached (see module doc).
    """

    __slots__ = (
        "body_start",
        "children",
        "content_id",
        "depth",
        "description",
        "disposition",
        "encoding",
        "end",
        "header",
        "language",
        "location",
        "md5",
        "media_subtype",
        "media_type",
        "message",
        "opaque",
        "params",
        "source",
        "start",
    )

    source: bytes
    start: int
    body_start: int
    end: int
    header: Header
    media_type: bytes
    media_subtype: bytes
    params: Params
    content_id: bytes | None
    description: bytes | None
    encoding: bytes
    md5: bytes | None
    disposition: Disposition | None
    language: tuple[bytes, ...] | None
    location: bytes | None
    children: tuple[MimePart, ...]
    message: MimePart | None
    depth: int
    opaque: bool

    # -- derived properties --

    @property
    def content_type(self) -> str:
        """``type/subtype``, lower-cased (ASCII)."""
        return (self.media_type + b"/" + self.media_subtype).decode("latin-1").lower()

    @property
    def is_multipart(self) -> bool:
        return not self.opaque and self.media_type.lower() == b"multipart"

    @property
    def is_message(self) -> bool:
        """A message/rfc822 (or message/global) part: ``message`` is the encapsulated message."""
        return self.message is not None

    @property
    def is_text(self) -> bool:
        return self.media_type.lower() == b"text"

    @property
    def transfer_encoding(self) -> str:
        return self.encoding.decode("latin-1").lower()

    @property
    def size(self) -> int:
        """Size of the body in octets (RFC 3501 body-fld-octets)."""
        return self.end - self.body_start

    @property
    def lines(self) -> int:
        """Number of text lines in the body (RFC 3501 body-fld-lines): its line ends, plus one
        for a last line without a line end (the line end before a boundary belongs to the
        boundary, RFC 2046 §5.1.1, so a part's last line usually has none)."""
        count = self.source.count(b"\n", self.body_start, self.end)
        if self.end > self.body_start and self.source[self.end - 1] != 0x0A:
            count += 1
        return count

    def param(self, name: str) -> bytes | None:
        """The value of Content-Type parameter *name* (case-insensitive), or ``None``."""
        wanted = name.lower().encode("latin-1", "replace")
        for key, value in self.params:
            if key.lower() == wanted:
                return value
        return None

    @property
    def charset(self) -> str | None:
        value = self.param("charset")
        return value.decode("latin-1").strip().lower() if value else None

    def header_view(self) -> memoryview:
        return memoryview(self.source)[self.start : self.body_start]

    def body_view(self) -> memoryview:
        return memoryview(self.source)[self.body_start : self.end]

    def body_bytes(self) -> bytes:
        return self.source[self.body_start : self.end]

    def raw(self) -> bytes:
        """The entity as written: header block and body."""
        return self.source[self.start : self.end]

    # -- part numbers (RFC 3501 §6.4.5) --

    def find(self, path: tuple[int, ...]) -> MimePart | None:
        """The part numbered *path* below this message, or ``None``.

        A multipart's parts are numbered from 1.  A non-multipart message has one part, 1: the
        message itself (its body is ``BODY[1]``).  Numbers continuing past a message/rfc822
        part number the parts of the encapsulated message the same way.  As in Dovecot, ``n.1``
        of any other non-multipart part is that part itself.
        """
        part: MimePart | None = self
        for index, number in enumerate(path):
            if part is None or number < 1:
                return None
            more = index + 1 < len(path)
            if part.is_multipart:
                part = part.children[number - 1] if number <= len(part.children) else None
            elif number != 1 or (more and part.message is None):
                return None
            if part is not None and more and part.message is not None:
                part = part.message
        return part

    def walk(self, prefix: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], MimePart]]:
        """Every numbered part below this message, depth first, with its part number."""
        if self.is_multipart:
            yield from self._walk_children(prefix)
        else:
            path = (*prefix, 1)
            yield path, self
            if self.message is not None:
                yield from self.message.walk(path)

    def _walk_children(self, prefix: tuple[int, ...]) -> Iterator[tuple[tuple[int, ...], MimePart]]:
        for number, child in enumerate(self.children, 1):
            path = (*prefix, number)
            yield path, child
            if child.message is not None:
                yield from child.message.walk(path)
            elif child.is_multipart:
                yield from child._walk_children(path)

    def __repr__(self) -> str:
        return (
            f"<MimePart {self.content_type} header={self.start}:{self.body_start} "
            f"body={self.body_start}:{self.end} children={len(self.children)}"
            f"{' message' if self.message is not None else ''}>"
        )


class _Context:
    __slots__ = ("count", "source")

    def __init__(self, source: bytes) -> None:
        self.source = source
        self.count = 0


_OPAQUE_TYPE = (b"application", b"octet-stream")


def _parse_entity(ctx: _Context, start: int, end: int, depth: int, *, digest: bool) -> MimePart:
    source = ctx.source
    ctx.count += 1
    part = MimePart()
    part.source = source
    part.start = start
    part.end = end
    part.depth = depth
    part.opaque = False
    part.children = ()
    part.message = None
    header = Header(source, start, end)
    part.header = header
    part.body_start = header.end

    mime = header.content_fields()
    content_type = mime.get("content-type")
    parsed = parse_content_params(content_type) if content_type is not None else None
    main, slash, sub = parsed[0].partition(b"/") if parsed is not None else (b"", b"", b"")
    if parsed is not None and slash:
        part.media_type, part.media_subtype, part.params = main, sub, parsed[1]
    elif digest:
        part.media_type, part.media_subtype, part.params = b"message", b"rfc822", ()
    else:
        # RFC 2045 §5.2: absent or syntactically invalid means text/plain; charset=us-ascii.
        part.media_type, part.media_subtype, part.params = b"text", b"plain", ()

    part.content_id = mime.get("content-id")
    part.description = mime.get("content-description")
    part.md5 = mime.get("content-md5")
    part.location = mime.get("content-location")
    encoding = mime.get("content-transfer-encoding")
    if encoding is not None:
        encoding, _ = _token(encoding, _skip_cfws(encoding, 0))
    part.encoding = encoding or b"7bit"
    disposition = mime.get("content-disposition")
    part.disposition = parse_content_params(disposition) if disposition is not None else None
    language = mime.get("content-language")
    part.language = _parse_language(language) if language is not None else None

    kind = part.media_type.lower()
    subtype = part.media_subtype.lower()
    structured = kind == b"multipart" or (kind == b"message" and subtype in (b"rfc822", b"global"))
    if structured and (depth >= MAX_DEPTH or ctx.count >= MAX_PARTS):
        part.opaque = True
        part.media_type, part.media_subtype = _OPAQUE_TYPE
        part.params = ()
    elif kind == b"multipart":
        part.children = _parse_multipart(ctx, part, depth, digest=subtype == b"digest")
    elif structured:
        part.message = _parse_entity(ctx, part.body_start, end, depth + 1, digest=False)
    return part


def _parse_multipart(ctx: _Context, part: MimePart, depth: int, *, digest: bool) -> tuple[MimePart, ...]:
    boundary = part.param("boundary")
    if not boundary:
        return ()
    source = ctx.source
    dash = b"--" + boundary
    body_start, end = part.body_start, part.end
    budget = max(1, MAX_PARTS - ctx.count)
    # (start of the line end before the delimiter, end of the delimiter line, close?)
    delimiters: list[tuple[int, int, bool]] = []
    pos = body_start
    while len(delimiters) < budget:
        found = source.find(dash, pos, end)
        if found < 0:
            break
        pos = found + 1
        if found != body_start and source[found - 1] != 0x0A:
            continue  # not at the start of a line
        after = found + len(dash)
        close = source.startswith(b"--", after, end)
        if close:
            newline = source.find(b"\n", after + 2, end)
            line_end = end if newline < 0 else newline + 1
        else:
            padding = _PADDING.match(source, after, end)
            if padding is None:
                continue  # "--boundaryX": another boundary that merely starts like ours
            line_end = padding.end()
        eol_start = found
        if found != body_start:
            eol_start -= 2 if found - 2 >= body_start and source[found - 2] == 0x0D else 1
        delimiters.append((eol_start, line_end, close))
        if close:
            break
        pos = line_end
    children: list[MimePart] = []
    for index, (_, line_end, close) in enumerate(delimiters):
        if close:
            break
        if index + 1 < len(delimiters):
            child_end = max(delimiters[index + 1][0], line_end)
        else:
            child_end = end  # no close delimiter (or part limit reached): runs to the end
        children.append(_parse_entity(ctx, line_end, child_end, depth + 1, digest=digest))
    return tuple(children)


def parse_message(data: bytes) -> MimePart:
    """Parse a whole message (``bytes``; other buffers are copied once) into its MIME tree.

    Never raises on malformed input.  Parse once per message and keep the result: FETCH items
    (BODYSTRUCTURE, ENVELOPE, BODY[...]) and SEARCH all work on the tree.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    return _parse_entity(_Context(data), 0, len(data), 0, digest=False)
