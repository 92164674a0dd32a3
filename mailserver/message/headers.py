"""Header-level helpers for messages of up to tens of megabytes.

Everything here works on the *header block* of a message, located with a bounded
search, and hands the body around as :class:`memoryview` slices of the original
buffer: a 25 MB message is never copied or parsed just to read or add a few header
fields.

Parsing policy
--------------
Header blocks are parsed with :data:`HEADER_POLICY`, a subclass of the stdlib
``compat32`` policy.  ``compat32`` is the only stdlib policy whose parsing *and*
header access never raise on junk: it keeps each field value as the raw (still
folded) string and records problems as defects.  The modern ``email.policy.default``
parses structured fields lazily when they are read, and that parser has had
exceptions escape on malformed input, which a mail server must not let an SMTP client
trigger.  The one change made to ``compat32`` is in :meth:`header_fetch_parse`: a
field containing 8-bit octets is returned as a ``str`` decoded as UTF-8 (RFC 6532),
falling back to Latin-1, instead of an ``email.header.Header`` object whose ``str()``
would turn every such octet into U+FFFD.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import Compat32
from email.utils import format_datetime, getaddresses

__all__ = [
    "HEADER_POLICY",
    "MAX_HEADER_SIZE",
    "MessageFormatError",
    "find_bare_line_endings",
    "fold_field",
    "format_date",
    "header_addresses",
    "make_message_id",
    "missing_headers",
    "parse_header",
    "received_header",
    "sanitize_header_value",
    "split_header",
]

#: The header block (separator included) must fit in this many octets.
MAX_HEADER_SIZE = 1 << 20

#: Longest HELO/EHLO argument or host name copied into a trace field: the maximum
#: length of a domain name (RFC 5321 §4.5.3.1.2).
MAX_DOMAIN_LENGTH = 255

#: Longest recipient copied into a trace field (RFC 5321 §4.5.3.1.3: a path is at
#: most 256 octets including the angle brackets).
MAX_PATH_LENGTH = 256

# Line length recommended by RFC 5322 §2.1.1 (excluding the CRLF).
_FOLD_WIDTH = 78

# The empty line ending the header block.  Searching for "\n" followed by an optional
# "\r" and "\n" finds CRLF CRLF as well as the LF LF, CRLF LF and LF CRLF variants
# that broken clients produce; the match always ends just after the separator.
_HEADER_END = re.compile(rb"\n\r?\n")

# C0 controls, DEL and C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_WHITESPACE_RUN = re.compile(r"\s+")

# Characters allowed in a domain, an address literal, or an id (RFC 5322 §3.2.3
# atext plus "." "[" "]" ":").
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.\[\]:-]")
_NOT_ATEXT = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]")
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN_LITERAL = re.compile(r"\[[\x21-\x5a\x5e-\x7e]*\]")  # RFC 5322 §3.4.1 dtext

# Characters that may not appear in an unquoted local part or in a domain as returned
# by getaddresses (a sign that the field was malformed and mis-split).
_BAD_ADDRESS_CHAR = re.compile(r"[\s<>()\[\],;:\\\"@\x00-\x1f\x7f]")

# Trace-field comment text: printable, no parentheses or backslash (RFC 5322 §3.2.2
# ctext), so that the comment cannot be closed early.
_NOT_CTEXT = re.compile(r"[()\\]")

# Characters removed from the recipient written in "for <...>".
_NOT_PATH = re.compile(r"[\s<>();\\]")

# Bases of the "with" protocol names registered by RFC 3848 and RFC 6531 §3.7.3.
_WITH_BASES = ("UTF8SMTP", "UTF8LMTP", "ESMTP", "LMTP", "SMTP")


class MessageFormatError(ValueError):
    """The message cannot be processed (for instance its header block is too long)."""


class _TolerantPolicy(Compat32):
    """``compat32`` returning 8-bit field values as decoded ``str`` (see module doc)."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # The parser decoded the octets as ASCII with surrogateescape.
            raw = value.encode("utf-8", "surrogateescape")
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return raw.decode("latin-1")
        return value


#: The policy used by :func:`parse_header`; immutable, like every email policy.
HEADER_POLICY: Compat32 = _TolerantPolicy(linesep="\r\n")


def _as_view(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def split_header(
    data: bytes | memoryview, *, max_header_size: int = MAX_HEADER_SIZE
) -> tuple[memoryview, memoryview]:
    """Split a message into its header block and its body, without copying.

    The header block includes the empty line that ends it (CRLF CRLF, or a bare-LF
    variant).  A message without that empty line is all header and has an empty body;
    a message starting with an empty line has no header fields (RFC 5322 §2.1).

    Only the first *max_header_size* octets are searched: when they do not contain
    the end of the header block and the message is longer than that,
    :class:`MessageFormatError` is raised.
    """
    view = _as_view(data)
    if view[:2].tobytes() == b"\r\n":
        return view[:2], view[2:]
    if view[:1].tobytes() == b"\n":
        return view[:1], view[1:]
    match = _HEADER_END.search(view, 0, max_header_size)
    if match is not None:
        end = match.end()
        return view[:end], view[end:]
    if len(view) > max_header_size:
        raise MessageFormatError(f"header block longer than {max_header_size} octets")
    return view, view[len(view) :]


def parse_header(header: bytes | memoryview) -> Message:
    """Parse a header block with :data:`HEADER_POLICY` (never raises on junk).

    If *header* is a whole message only its header block is parsed (the body is not
    read); :class:`MessageFormatError` is raised when that block is too long.
    """
    head, _ = split_header(header)
    # The copy is bounded by MAX_HEADER_SIZE.
    return BytesHeaderParser(policy=HEADER_POLICY).parsebytes(bytes(head))


def select_fields(header: bytes | memoryview, names: Iterable[str]) -> Message:
    """Only the named fields of a header block, unfolded (RFC 5322 §2.2.3), as a ``Message``.

    Much cheaper than :func:`parse_header` when a few fields are needed (the submission path
    reads From, Sender, Message-ID and Date of every message). Lines without a colon are
    skipped, as the full parser would treat them as defects.
    """
    wanted = {n.lower() for n in names}
    head, _ = split_header(header)
    msg = Message(policy=HEADER_POLICY)
    current: list[str] | None = None
    fields: list[tuple[str, list[str]]] = []
    for raw in bytes(head).split(b"\n"):
        line = raw.rstrip(b"\r").decode("utf-8", "surrogateescape")
        if not line:
            continue
        if line[0] in " \t":
            if current is not None:
                current.append(line)
            continue
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() in wanted:
            current = [value.lstrip()]
            fields.append((name.strip(), current))
        else:
            current = None
    for name, parts in fields:
        value = "".join(parts).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        msg[name] = value
    return msg


def _field_text(value: object) -> str:
    if isinstance(value, Header):
        return str(value)
    return value if isinstance(value, str) else str(value)


def _normalize_address(address: str) -> str | None:
    address = address.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return None
    if _CONTROL.search(address):
        return None
    if domain.startswith("["):
        if not _DOMAIN_LITERAL.fullmatch(domain):
            return None
    else:
        if _BAD_ADDRESS_CHAR.search(domain):
            return None
        domain = domain.lower()
    quoted = len(local) >= 2 and local.startswith('"') and local.endswith('"')
    if not quoted and _BAD_ADDRESS_CHAR.search(local):
        return None
    return f"{local}@{domain}"


def header_addresses(msg: Message, name: str) -> list[str]:
    """The addr-specs of every occurrence of address field *name* (From, To, Cc...).

    Each occurrence is parsed on its own with :func:`email.utils.getaddresses`, which
    copes with groups (``undisclosed-recipients:;`` yields nothing) and with RFC 2047
    encoded display names (they are atoms to the address parser).  The domain is
    lower-cased; the local part is kept as is (RFC 5321 §2.4: it may be case
    sensitive).  Empty entries and entries that are not plausible addr-specs (no
    ``@``, or ``<``, whitespace, etc. outside a quoted local part) are skipped.

    Caveat: on Python versions without the CVE-2023-27043 fix, a malformed value such
    as ``alice@a.example <bob@b.example>`` yields *both* addresses, so code enforcing
    "exactly one author" rejects it rather than picking the wrong one.
    """
    result: list[str] = []
    for value in msg.get_all(name) or []:
        for _display, address in getaddresses([_field_text(value)]):
            normalized = _normalize_address(address)
            if normalized is not None:
                result.append(normalized)
    return result


def find_bare_line_endings(data: bytes | memoryview, *, chunk_size: int = 1 << 20) -> bool:
    """True when *data* has a LF not preceded by CR or a CR not followed by LF.

    RFC 5321 §2.3.8: in SMTP, CR and LF may only appear together as CRLF (bare ones
    are what "SMTP smuggling" abuses).  The check is three C-level counts: the data
    is clean exactly when the numbers of LF, CR and CRLF are equal.  A ``bytes`` input
    is counted in place; other buffers are counted one *chunk_size* slice at a time,
    so at most one slice is ever copied.
    """
    if isinstance(data, bytes | bytearray):
        crlf = data.count(b"\r\n")
        return data.count(b"\n") != crlf or data.count(b"\r") != crlf
    view = _as_view(data)
    lf = cr = crlf = 0
    previous_ends_with_cr = False
    for start in range(0, len(view), chunk_size):
        chunk = bytes(view[start : start + chunk_size])
        lf += chunk.count(b"\n")
        cr += chunk.count(b"\r")
        crlf += chunk.count(b"\r\n")
        if previous_ends_with_cr and chunk[:1] == b"\n":
            crlf += 1  # a CRLF split across two slices
        previous_ends_with_cr = chunk[-1:] == b"\r"
    return lf != crlf or cr != crlf


def sanitize_header_value(value: str, *, max_length: int | None = None) -> str:
    """Make *value* safe as (part of) a header field body.

    Control characters, including CR and LF, become spaces so that nothing can start
    a new field (header injection); whitespace runs are collapsed and the ends
    stripped.  With *max_length*, the result is truncated to that many characters.
    """
    text = _WHITESPACE_RUN.sub(" ", _CONTROL.sub(" ", value)).strip()
    if max_length is not None and len(text) > max_length:
        text = text[:max_length].rstrip()
    return text


def _fold_units(name: str, units: Iterable[str], *, width: int, indent: str) -> str:
    """Fold ``name: unit unit ...`` at unit boundaries (RFC 5322 §2.2.3).

    A unit that cannot fit even on a line of its own is split at its spaces.  The
    first unit always goes on the first line, so no line is made only of whitespace.
    Returns the field with CRLF line endings, including the final CRLF.
    """
    lines: list[str] = []
    current = name + ":"
    first = True
    for unit in units:
        if not unit:
            continue
        pieces = [unit]
        if len(indent) + len(unit) > width:
            pieces = [word for word in unit.split(" ") if word]
        for piece in pieces:
            if first or len(current) + 1 + len(piece) <= width:
                current += " " + piece
            else:
                lines.append(current)
                current = indent + piece
            first = False
    lines.append(current)
    return "\r\n".join(lines) + "\r\n"


def fold_field(name: str, value: str, *, width: int = _FOLD_WIDTH) -> bytes:
    """``name: value`` CRLF, sanitized and folded at spaces to lines of at most
    *width* characters where possible; UTF-8 encoded."""
    units = sanitize_header_value(value).split(" ")
    return _fold_units(name, units, width=width, indent=" ").encode("utf-8")


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


def format_date(when: datetime) -> str:
    """An RFC 5322 §3.3 date-time; a naive *when* is taken to be UTC.

    Written by hand for UTC (the usual case, on every message) because ``email.utils`` is ten
    times slower; other offsets go through ``email.utils.format_datetime``.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when.utcoffset() != timedelta(0):
        return format_datetime(when)
    return (
        f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} {when.year:04d} "
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} +0000"
    )


def _token(value: str, max_length: int) -> str:
    """A domain-ish token: printable ASCII without separators, bounded."""
    return _NOT_TOKEN.sub("", value)[:max_length]


def _comment_text(value: str, max_length: int = 200) -> str:
    return sanitize_header_value(_NOT_CTEXT.sub("", value), max_length=max_length)


def _address_literal(ip: str) -> str | None:
    if _IPV4.fullmatch(ip) and all(int(part) < 256 for part in ip.split(".")):
        return f"[{ip}]"  # the common case, without ipaddress's cost
    text = ip.strip().strip("[]")
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    text = text.partition("%")[0]  # drop an IPv6 zone index
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"[{address.ipv4_mapped}]"
        # RFC 5321 §4.1.3 IPv6-address-literal.
        return f"[IPv6:{address.compressed}]"
    return f"[{address}]"


def _with_protocol(protocol: str, *, tls: bool, authenticated: bool) -> str:
    """The ``with`` keyword: RFC 3848 (ESMTPS, ESMTPA, ESMTPSA, LMTP*) and RFC 6531
    §3.7.3 (UTF8SMTP*).  Plain ``SMTP`` (HELO) has no registered variants."""
    name = re.sub(r"[^A-Za-z0-9]", "", protocol).upper()[:32] or "SMTP"
    for base in _WITH_BASES:
        if name in (base, base + "S", base + "A", base + "SA"):
            if base == "SMTP":
                return base
            return base + ("S" if tls else "") + ("A" if authenticated else "")
    return name


def received_header(
    *,
    from_helo: str,
    from_ip: str,
    by_host: str,
    protocol: str,
    recipient: str | None,
    queue_id: str,
    tls: str | None,
    when: datetime,
    auth_user: str | None = None,
    disclose_auth_user: bool = False,
) -> bytes:
    """An RFC 5321 §4.4 ``Received:`` trace field, CRLF-terminated and folded.

    ``from <helo> ([ip]) by <host> with <proto> (using <tls>) id <queue_id>
    for <recipient>; <date>``.

    * *from_helo* is what the client sent: control characters, spaces and comment
      or address delimiters are removed and it is cut to 255 characters; an empty
      result becomes ``unknown``.  The connecting IP is given as an RFC 5321 §4.1.3
      address literal in the TCP-info comment.
    * *protocol* is the base protocol (``SMTP`` for HELO, ``ESMTP``, ``LMTP``,
      ``UTF8SMTP``); the RFC 3848 / RFC 6531 suffixes ``S`` (TLS) and ``A``
      (authenticated) are derived from *tls* and *auth_user*.
    * *tls* is free text describing the session, e.g. ``"TLSv1.3 with cipher
      TLS_AES_256_GCM_SHA384"``; it is placed in a comment.
    * *recipient*: give it only for single-recipient transactions (RFC 5321 §7.2
      warns that ``for`` discloses Bcc recipients otherwise).
    * *auth_user* only sets the ``A`` suffix; the login name is written in a comment
      only when *disclose_auth_user* is true.  No credential is ever written.
    * A naive *when* is taken to be UTC.
    """
    helo = _token(from_helo, MAX_DOMAIN_LENGTH) or "unknown"
    by = _token(by_host, MAX_DOMAIN_LENGTH) or "localhost"
    literal = _address_literal(from_ip)
    units: list[str] = [f"from {helo}", f"({literal})" if literal else "(unknown)", f"by {by}"]
    units.append("with " + _with_protocol(protocol, tls=bool(tls), authenticated=bool(auth_user)))
    if tls:
        tls_text = _comment_text(tls)
        if tls_text:
            units.append(f"(using {tls_text})")
    if auth_user and disclose_auth_user:
        user = _comment_text(auth_user, MAX_PATH_LENGTH)
        if user:
            units.append(f"(authenticated as {user})")
    qid = _NOT_ATEXT.sub("", queue_id)[:64]
    if qid:
        units.append(f"id {qid}")
    if recipient:
        # No brackets, parentheses or ";": the date is what follows the last ";"
        # (RFC 5322 §3.6.7), and the path must not open a comment.
        rcpt = _NOT_PATH.sub("", sanitize_header_value(recipient))[:MAX_PATH_LENGTH]
        if rcpt:
            units.append(f"for <{rcpt}>")
    units[-1] += ";"
    units.append(format_date(when))
    return _fold_units("Received", units, width=_FOLD_WIDTH, indent="\t").encode("utf-8")


def make_message_id(domain: str) -> str:
    """A new globally unique ``<random-hex@domain>`` msg-id (RFC 5322 §3.6.4).

    *domain* is lower-cased, and IDNA-encoded when it is not ASCII; ValueError is
    raised when it is not a valid id-right.
    """
    right = domain.strip().rstrip(".").lower()
    if not right.isascii():
        right = right.encode("idna").decode("ascii")  # UnicodeError is a ValueError
    if not (_DOT_ATOM.fullmatch(right) or _DOMAIN_LITERAL.fullmatch(right)):
        raise ValueError(f"invalid message-id domain: {domain!r}")
    return f"<{secrets.token_hex(16)}@{right}>"  # 128 random bits, as a UUID4 has 122


def missing_headers(msg: Message, *, domain: str, now: datetime) -> bytes:
    """The ``Message-ID:`` and ``Date:`` fields to prepend when *msg* lacks them.

    RFC 5322 §3.6 requires an origination date and, SHOULD, a message identifier;
    RFC 6409 §8.2/§8.3 lets a submission server add them.  A field that is present
    (even empty) is never duplicated, since both may appear at most once.  Returns
    CRLF-terminated lines, or ``b""`` when nothing is missing.
    """
    lines: list[str] = []
    if msg.get("Message-ID") is None:
        lines.append(f"Message-ID: {make_message_id(domain)}\r\n")
    if msg.get("Date") is None:
        lines.append(f"Date: {format_date(now)}\r\n")
    return "".join(lines).encode("ascii")
