"""IMAP wire syntax shared by both directions: the character classes of RFC 3501 §9, and the
encoders of strings, lists, mailbox names, dates and flags that responses are built from.

Every encoder returns ``bytes`` ready to be written; strings that cannot be sent as an atom or a
quoted string (CR, LF, NUL, or 8-bit octets outside UTF8=ACCEPT) become literals ``{n}\\r\\n...``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from mailserver.imap import mutf7

# RFC 3501 §9. CHAR is %x01-7F and CTL %x00-1F / %x7F; atom-specials are
# "(" ")" "{" SP CTL list-wildcards quoted-specials resp-specials.
ATOM_CHARS = frozenset(range(0x21, 0x7F)) - frozenset(b'(){%*"\\]')
"""ATOM-CHAR: any CHAR except atom-specials."""
ASTRING_CHARS = ATOM_CHARS | frozenset(b"]")
"""ASTRING-CHAR = ATOM-CHAR / resp-specials."""
LIST_CHARS = ASTRING_CHARS | frozenset(b"%*")
"""list-char = ATOM-CHAR / list-wildcards / resp-specials."""
TAG_CHARS = ASTRING_CHARS - frozenset(b"+")
"""tag = 1*<any ASTRING-CHAR except "+">."""

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MONTHS = {name.upper(): number for number, name in enumerate(_MONTHS, start=1)}
"""Month abbreviations (upper case) to month numbers, for ``date-month``."""


def _octets(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def literal(data: bytes) -> bytes:
    """A synchronising-literal form string, as servers send them: ``{n}\\r\\n`` + data."""
    return b"{%d}\r\n" % len(data) + data


def _quotable(data: bytes, utf8: bool) -> bool:
    if b"\r" in data or b"\n" in data or b"\0" in data:
        return False
    if data.isascii():
        return True
    if not utf8:
        return False
    # RFC 6855 §3: with UTF8=ACCEPT a quoted string may hold UTF-8, and only valid UTF-8.
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def quote(value: str | bytes, *, utf8: bool = False) -> bytes:
    """``value`` as a quoted string (``\\`` and ``"`` escaped) when it can be one, else a literal.
    ``utf8``: the client enabled UTF8=ACCEPT, so UTF-8 may be quoted (RFC 6855)."""
    data = _octets(value)
    if _quotable(data, utf8):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(data)


def astring(value: str | bytes, *, utf8: bool = False) -> bytes:
    """``value`` as an atom when it can be one (quoted when it spells ``NIL``, to spare clients
    that would read it as nil), else as :func:`quote` does."""
    data = _octets(value)
    if data and all(octet in ASTRING_CHARS for octet in data) and data.upper() != b"NIL":
        return data
    return quote(data, utf8=utf8)


def nstring(value: str | bytes | None, *, utf8: bool = False) -> bytes:
    """``NIL`` for ``None``, else :func:`quote`."""
    return b"NIL" if value is None else quote(value, utf8=utf8)


def imap_list(items: Iterable[bytes]) -> bytes:
    """A parenthesised list of already encoded items: ``(a b c)``."""
    return b"(" + b" ".join(items) + b")"


def mailbox(name: str, *, utf8: bool = False) -> bytes:
    """A mailbox name for a response: modified UTF-7 (RFC 3501 §5.1.3), or UTF-8 as is when the
    client enabled UTF8=ACCEPT (RFC 6855 §3); as an atom when possible."""
    return astring(name if utf8 else mutf7.encode(name), utf8=utf8)


def flag_list(flags: Iterable[str]) -> bytes:
    """A flag list: ``(\\Seen $Forwarded)``. Flags are atoms (as the parser accepts them)."""
    return imap_list(flag.encode("ascii") for flag in flags)


def format_datetime(when: datetime) -> bytes:
    """An INTERNALDATE ``date-time`` with its quotes: ``" 7-Jul-1996 02:44:25 +0000"``. RFC 3501
    §9: the day is ``date-day-fixed`` (space padded). A naive ``when`` is taken as UTC."""
    if when.tzinfo is None or when.utcoffset() is None:
        when = when.replace(tzinfo=UTC)
    offset = when.utcoffset() or timedelta(0)
    minutes = round(offset.total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    text = (
        f'"{when.day:2d}-{_MONTHS[when.month - 1]}-{when.year:04d} '
        f'{when.hour:02d}:{when.minute:02d}:{when.second:02d} {sign}{hours:02d}{minutes:02d}"'
    )
    return text.encode("ascii")
