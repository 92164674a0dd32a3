"""ENVELOPE (RFC 3501 §7.4.2), and the IMAP string rendering shared with BODYSTRUCTURE.

The envelope is built from the raw header fields: values keep their RFC 2047 encoded-words
(the client decodes them, RFC 3501 §7.4.2 note), folding is removed (RFC 5322 §2.2.3), and the
address fields are parsed into ``(name adl mailbox host)`` structures with a tolerant RFC 5322
§3.4 parser written for this purpose: the stdlib ``email.utils.getaddresses`` loses group
syntax and route addresses, which IMAP must report.

Group syntax (RFC 3501 §7.4.2): ``group: a@b, c@d;`` becomes a start marker ``(NIL NIL "group"
NIL)``, the members, and an end marker ``(NIL NIL NIL NIL)``.  An address without a domain gets
host ``MISSING_DOMAIN`` (NIL would read as a group marker), one without a local part mailbox
``MISSING_MAILBOX``.

Strings: a value made only of 7-bit characters other than NUL, CR and LF is sent as a quoted
string; anything else (8-bit header octets, RFC 6532) as a literal, or — when the session has
enabled UTF8=ACCEPT (RFC 6855 §3) and the value is valid UTF-8 — as a quoted string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailserver.imap.mime import Header, MimePart

__all__ = [
    "MISSING_DOMAIN",
    "MISSING_MAILBOX",
    "Address",
    "Envelope",
    "envelope",
    "imap_nstring",
    "imap_string",
    "parse_address_list",
    "parse_envelope",
    "render_addresses",
]

MISSING_DOMAIN = b"MISSING_DOMAIN"
MISSING_MAILBOX = b"MISSING_MAILBOX"

# RFC 3501 §9: QUOTED-CHAR is any TEXT-CHAR (CHAR = %x01-7F, minus CR and LF).
_QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")
_UNSAFE_UTF8 = re.compile(rb"[\x00\r\n]")
_LINE_BREAK = re.compile(rb"\r?\n")


def imap_string(value: bytes, *, utf8: bool = False) -> bytes:
    """*value* as an IMAP ``string``: quoted when possible, else a literal.

    NUL octets, which no IMAP string may hold (RFC 3501 §4.3), are dropped.  With *utf8*
    (UTF8=ACCEPT enabled), valid UTF-8 without CR/LF is quoted too (RFC 6855 §3).
    """
    if b"\x00" in value:
        value = value.replace(b"\x00", b"")
    quotable = _QUOTABLE.fullmatch(value) is not None
    if not quotable and utf8 and _UNSAFE_UTF8.search(value) is None:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            quotable = True
    if quotable:
        return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(value) + value


def imap_nstring(value: bytes | None, *, utf8: bool = False) -> bytes:
    """*value* as an IMAP ``nstring``: ``NIL`` for ``None``."""
    return b"NIL" if value is None else imap_string(value, utf8=utf8)


@dataclass(frozen=True, slots=True)
class Address:
    """An RFC 3501 address structure; all four ``None`` is a group end marker, ``host`` ``None``
    with a ``mailbox`` a group start (``mailbox`` holds the group name)."""

    name: bytes | None
    adl: bytes | None
    mailbox: bytes | None
    host: bytes | None

    def render(self, *, utf8: bool = False) -> bytes:
        return b"(%s %s %s %s)" % (
            imap_nstring(self.name, utf8=utf8),
            imap_nstring(self.adl, utf8=utf8),
            imap_nstring(self.mailbox, utf8=utf8),
            imap_nstring(self.host, utf8=utf8),
        )


_GROUP_END = Address(None, None, None, None)


def render_addresses(addresses: tuple[Address, ...], *, utf8: bool = False) -> bytes:
    """``((...)(...))``, or ``NIL`` when there is no address."""
    if not addresses:
        return b"NIL"
    return b"(" + b"".join(a.render(utf8=utf8) for a in addresses) + b")"


# --- RFC 5322 §3.4 address lists -----------------------------------------------------------

_ATOM, _QUOTED, _COMMENT, _LITERAL, _SPECIAL = range(5)
# Atom octets: RFC 5322 atext plus "." (dot-atoms and obsolete phrases) and 8-bit (RFC 6532).
_ATOM_RE = re.compile(rb'[^\x00-\x20\x7f()<>\[\]:;@\\,"]+')


@dataclass(frozen=True, slots=True)
class _Token:
    kind: int
    raw: bytes  # as written (quotes and brackets included; comment: its content)
    text: bytes  # atom: raw; quoted string: content, quoted-pairs resolved; comment: content
    space_before: bool


def _tokenize(value: bytes) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    length = len(value)
    space = False
    while pos < length:
        char = value[pos]
        if char in (0x20, 0x09):
            space = True
            pos += 1
            continue
        if char == 0x22:  # quoted string
            out = bytearray()
            end = pos + 1
            while end < length and value[end] != 0x22:
                if value[end] == 0x5C and end + 1 < length:
                    end += 1
                out.append(value[end])
                end += 1
            end = min(end + 1, length)
            tokens.append(_Token(_QUOTED, value[pos:end], bytes(out), space))
            pos = end
        elif char == 0x28:  # comment, possibly nested
            depth = 0
            end = pos
            out = bytearray()
            while end < length:
                c = value[end]
                if c == 0x5C and end + 1 < length:
                    out.append(value[end + 1])
                    end += 2
                    continue
                if c == 0x28:
                    depth += 1
                    if depth > 1:
                        out.append(c)
                elif c == 0x29:
                    depth -= 1
                    if depth == 0:
                        end += 1
                        break
                    out.append(c)
                else:
                    out.append(c)
                end += 1
            text = bytes(out).strip(b" \t")
            tokens.append(_Token(_COMMENT, text, text, space))
            pos = end
        elif char == 0x5B:  # domain literal
            end = value.find(b"]", pos)
            end = length if end < 0 else end + 1
            tokens.append(_Token(_LITERAL, value[pos:end], value[pos:end], space))
            pos = end
        elif char in b"<>:;@,":
            tokens.append(_Token(_SPECIAL, value[pos : pos + 1], value[pos : pos + 1], space))
            pos += 1
        else:
            match = _ATOM_RE.match(value, pos)
            if match is None:  # stray ")" "]" "\" or a control character
                pos += 1
                space = True
                continue
            tokens.append(_Token(_ATOM, match.group(), match.group(), space))
            pos = match.end()
        space = False
    return tokens


def _is_special(token: _Token, char: bytes) -> bool:
    return token.kind == _SPECIAL and token.raw == char


def _phrase(tokens: list[_Token]) -> bytes | None:
    """A display name or group name: words joined by single spaces where the source had white
    space; quoted strings unquoted; encoded-words kept as written."""
    out = bytearray()
    for token in tokens:
        if token.kind == _COMMENT:
            continue
        if out and token.space_before:
            out += b" "
        out += token.text
    return bytes(out) if out else None


def _join_raw(tokens: list[_Token], *, unquote: bool = False) -> bytes:
    """A local part or a domain: the tokens without the white space between them (RFC 5322
    §3.4.1 obsolete syntax allows CFWS around the dots).  With *unquote* (local parts), quoted
    strings give their content, as Dovecot and Cyrus report ``"john doe"@x`` as ``john doe``."""
    return b"".join(t.text if unquote else t.raw for t in tokens if t.kind != _COMMENT)


def _mailbox(tokens: list[_Token]) -> Address | None:
    words = [t for t in tokens if t.kind != _COMMENT]
    if not words:
        return None
    comments = [t.text for t in tokens if t.kind == _COMMENT and t.text]
    name: bytes | None
    adl: bytes | None = None
    opening = next((i for i, t in enumerate(words) if _is_special(t, b"<")), None)
    if opening is not None:  # name-addr: [phrase] "<" [route ":"] addr-spec ">"
        name = _phrase(words[:opening])
        closing = next((i for i in range(opening + 1, len(words)) if _is_special(words[i], b">")), len(words))
        inner = words[opening + 1 : closing]
        if inner and _is_special(inner[0], b"@"):
            colon = next((i for i, t in enumerate(inner) if _is_special(t, b":")), None)
            if colon is not None:
                adl = _join_raw(inner[:colon])
                inner = inner[colon + 1 :]
        spec = inner
    else:  # addr-spec [comment]
        name = None
        spec = words
    at = next((i for i, t in enumerate(spec) if _is_special(t, b"@")), None)
    if at is None:
        if opening is None and len(spec) > 1:  # a bare phrase: a name without an address
            return Address(_phrase(spec), None, MISSING_MAILBOX, MISSING_DOMAIN)
        local, host = _join_raw(spec, unquote=True), b""
    else:
        local, host = _join_raw(spec[:at], unquote=True), _join_raw(spec[at + 1 :])
    if name is None and comments:
        name = comments[-1]  # "user@host (Real Name)"
    if not local and not host and name is None and adl is None:
        return None  # "<>"
    return Address(name, adl, local or MISSING_MAILBOX, host or MISSING_DOMAIN)


def parse_address_list(value: bytes) -> tuple[Address, ...]:
    """Parse an address-list field value (From, To, Cc...) into IMAP address structures.

    Tolerant: never raises; empty entries are skipped; an unterminated group is closed.
    """
    value = _LINE_BREAK.sub(b"", value)
    result: list[Address] = []
    current: list[_Token] = []
    in_group = False
    in_angle = False

    def flush() -> None:
        address = _mailbox(current)
        if address is not None:
            result.append(address)
        current.clear()

    for token in _tokenize(value):
        if token.kind == _SPECIAL:
            char = token.raw
            if char == b"<":
                in_angle = True
            elif char == b">":
                in_angle = False
            elif not in_angle:
                if char == b",":
                    flush()
                    continue
                if char == b":" and not in_group:
                    result.append(Address(None, None, _phrase(current) or b"", None))
                    current.clear()
                    in_group = True
                    continue
                if char == b";" and in_group:
                    flush()
                    result.append(_GROUP_END)
                    in_group = False
                    continue
        current.append(token)
    flush()
    if in_group:
        result.append(_GROUP_END)
    return tuple(result)


# --- The envelope --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    """The ten envelope fields: raw (unfolded) values and parsed address lists."""

    date: bytes | None
    subject: bytes | None
    from_: tuple[Address, ...]
    sender: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    in_reply_to: bytes | None
    message_id: bytes | None

    def render(self, *, utf8: bool = False) -> bytes:
        """The parenthesized ENVELOPE of RFC 3501 §7.4.2."""
        return b"(%s)" % b" ".join(
            (
                imap_nstring(self.date, utf8=utf8),
                imap_nstring(self.subject, utf8=utf8),
                render_addresses(self.from_, utf8=utf8),
                render_addresses(self.sender, utf8=utf8),
                render_addresses(self.reply_to, utf8=utf8),
                render_addresses(self.to, utf8=utf8),
                render_addresses(self.cc, utf8=utf8),
                render_addresses(self.bcc, utf8=utf8),
                imap_nstring(self.in_reply_to, utf8=utf8),
                imap_nstring(self.message_id, utf8=utf8),
            )
        )


def _addresses(header: Header, name: str) -> tuple[Address, ...]:
    value = header.get(name)
    return parse_address_list(value) if value is not None else ()


def parse_envelope(header: Header) -> Envelope:
    """The envelope of a message header block (the first occurrence of each field is used).

    RFC 3501 §7.4.2: an absent Date, Subject, In-Reply-To or Message-ID is NIL, a present but
    empty one the empty string; Sender and Reply-To default to From when absent or empty.
    """
    from_ = _addresses(header, "From")
    return Envelope(
        date=header.get("Date"),
        subject=header.get("Subject"),
        from_=from_,
        sender=_addresses(header, "Sender") or from_,
        reply_to=_addresses(header, "Reply-To") or from_,
        to=_addresses(header, "To"),
        cc=_addresses(header, "Cc"),
        bcc=_addresses(header, "Bcc"),
        in_reply_to=header.get("In-Reply-To"),
        message_id=header.get("Message-ID"),
    )


def envelope(message: MimePart, *, utf8: bool = False) -> bytes:
    """The rendered ENVELOPE of *message* (the root of :func:`~mailserver.imap.mime.parse_message`,
    or the ``message`` of a message/rfc822 part)."""
    return parse_envelope(message.header).render(utf8=utf8)
