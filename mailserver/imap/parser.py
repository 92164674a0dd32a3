"""The IMAP4rev1 command parser (RFC 3501 §6 and §9, and the extensions listed below): a framed
:class:`~mailserver.imap.framing.CommandLine` in, a typed frozen :class:`Command` out, or a
:class:`ParseError` and nothing else. It knows nothing of sessions or storage: whether a command
is allowed in the current state is for the session to decide.

Extensions: LITERAL+ (RFC 7888, in the framer), SASL-IR (RFC 4959), UIDPLUS's UID EXPUNGE
(RFC 4315), UNSELECT (RFC 3691), IDLE (RFC 2177), NAMESPACE (RFC 2342), ID (RFC 2971), ENABLE
(RFC 5161), MOVE (RFC 6851), CONDSTORE (RFC 7162), LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819),
SPECIAL-USE and CREATE-SPECIAL-USE (RFC 6154), ESEARCH's SEARCH RETURN (RFC 4731), and UTF-8
mailbox names (RFC 6855).

The parser never recurses: search keys are built with an explicit stack, so hostile nesting
meets a :class:`ParserLimits` limit, not Python's recursion limit.
"""

from __future__ import annotations

import base64
import binascii
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import ClassVar

from mailserver.imap import mutf7
from mailserver.imap import searchkeys as sk
from mailserver.imap.framing import CommandLine, Literal, Part
from mailserver.imap.sequence import MAX_NUMBER, SequenceSet, SequenceSetError
from mailserver.imap.wire import ASTRING_CHARS, ATOM_CHARS, LIST_CHARS, MONTHS, TAG_CHARS

MAX_MODSEQ = 2**63 - 1
"""RFC 7162 §7: mod-sequence values are 63-bit unsigned integers."""

SYSTEM_FLAGS = {name.upper(): name for name in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")}
"""Storable system flags (RFC 3501 §2.3.2), upper case to canonical spelling. ``\\Recent`` is
not among them: only the server sets it."""

SPECIAL_USES = {
    name.upper(): name
    for name in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
}
"""Special-use attributes of RFC 6154 §2, upper case to canonical spelling."""

STATUS_ITEMS = frozenset({"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ"})
"""STATUS data items: RFC 3501 §6.3.10, and HIGHESTMODSEQ of RFC 7162 §3.1.9."""

SEARCH_CHARSETS = ("US-ASCII", "UTF-8")
BADCHARSET_CODE = "BADCHARSET (US-ASCII UTF-8)"

LIST_SELECT_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
LIST_RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})
SEARCH_RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT"})

_DIGITS = frozenset(b"0123456789")
_SEQUENCE_CHARS = frozenset(b"0123456789:,*")
_FETCH_NAME_CHARS = ATOM_CHARS - frozenset(b"[")
_SECTION_CHARS = frozenset(b"0123456789.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# A header field name (RFC 5322 §3.6.8 ftext): printable US-ASCII except ":".
_FIELD_NAME_CHARS = frozenset(range(0x21, 0x7F)) - frozenset(b":")
# APPEND's date-time without its quotes; RFC 3501 §9 date-day-fixed is (SP DIGIT) / 2DIGIT, and a
# single digit without the space is taken too.
_DATE_TIME = re.compile(
    r" ?([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"
)
_DATE = re.compile(r"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")


class ParseError(Exception):
    """A command that cannot be parsed. The session answers ``tag status [code] reason``, or
    ``* BAD reason`` when ``tag`` is ``None`` (not even the tag could be read). ``status`` is
    ``BAD`` except for an unsupported search charset: ``NO [BADCHARSET (US-ASCII UTF-8)]``
    (RFC 3501 §6.4.4). ``reason`` is printable US-ASCII, safe to echo."""

    def __init__(self, tag: str | None, reason: str, *, code: str | None = None, status: str = "BAD") -> None:
        reason = "".join(char if " " <= char <= "~" else "?" for char in reason[:200])
        super().__init__(reason)
        self.tag = tag
        self.reason = reason
        self.code = code
        self.status = status


@dataclass(frozen=True, slots=True)
class ParserLimits:
    max_depth: int = 32
    """Nesting of parenthesised lists (search keys)."""
    max_args: int = 4096
    """Tokens (atoms, strings, numbers, sequence sets, parentheses) in one command."""


# -- fetch attributes (RFC 3501 §6.4.5) --------------------------------------------------------

SectionText = typing.Literal["HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"]


def _render_field(name: str) -> str:
    if all(ord(char) in ASTRING_CHARS for char in name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class Section:
    """A body section: ``part`` numbers (``1.2.3``; empty for the whole message), then ``text``:
    HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME (after a part number only) or nothing.
    ``fields`` are the HEADER.FIELDS(.NOT) names as the client spelt them (match them
    case-insensitively)."""

    part: tuple[int, ...] = ()
    text: SectionText | None = None
    fields: tuple[str, ...] = ()

    def render(self) -> str:
        """The section spec inside the brackets, as the response echoes it:
        ``1.2.HEADER.FIELDS (From To)``, ``TEXT``, ``3``, or ``""`` for the whole message."""
        spec = ".".join(map(str, self.part))
        if self.text is not None:
            spec = f"{spec}.{self.text}" if spec else self.text
        if self.fields:
            spec += " (" + " ".join(_render_field(name) for name in self.fields) + ")"
        return spec


FetchName = typing.Literal[
    "ENVELOPE",
    "FLAGS",
    "INTERNALDATE",
    "RFC822",
    "RFC822.HEADER",
    "RFC822.SIZE",
    "RFC822.TEXT",
    "BODY",
    "BODYSTRUCTURE",
    "UID",
    "MODSEQ",
]
_FETCH_NAMES: frozenset[str] = frozenset(typing.get_args(FetchName))


@dataclass(frozen=True, slots=True)
class FetchAttribute:
    """One FETCH data item. ``BODY[...]`` and ``BODY.PEEK[...]`` are ``name="BODY"`` with a
    ``section`` (and ``peek``); plain ``BODY`` (the non-extensible BODYSTRUCTURE) has none.
    ``partial`` is ``(origin, count)`` of ``<origin.count>``."""

    name: FetchName
    section: Section | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None

    @property
    def sets_seen(self) -> bool:
        """Whether fetching it sets ``\\Seen`` (RFC 3501 §6.4.5): BODY[...] without PEEK,
        RFC822 and RFC822.TEXT."""
        if self.name == "BODY":
            return self.section is not None and not self.peek
        return self.name in ("RFC822", "RFC822.TEXT")

    def response_name(self) -> str:
        """The item's name in the FETCH response: ``BODY[HEADER.FIELDS (From To)]``, and for a
        partial fetch ``BODY[TEXT]<0>``: only the origin is echoed (RFC 3501 §7.4.2). PEEK is
        never echoed."""
        if self.section is None:
            return self.name
        name = f"BODY[{self.section.render()}]"
        return name if self.partial is None else f"{name}<{self.partial[0]}>"


_FAST: tuple[FetchName, ...] = ("FLAGS", "INTERNALDATE", "RFC822.SIZE")
# RFC 3501 §6.4.5: the macros, which are only allowed alone.
FETCH_MACROS: Mapping[str, tuple[FetchAttribute, ...]] = {
    "ALL": tuple(FetchAttribute(name) for name in (*_FAST, "ENVELOPE")),
    "FAST": tuple(FetchAttribute(name) for name in _FAST),
    "FULL": tuple(FetchAttribute(name) for name in (*_FAST, "ENVELOPE", "BODY")),
}


# -- commands ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """A parsed command; ``name`` (a class attribute) is its keyword, without ``UID``."""

    name: ClassVar[str] = ""
    tag: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Capability(Command):
    name: ClassVar[str] = "CAPABILITY"


@dataclass(frozen=True, slots=True, kw_only=True)
class Noop(Command):
    name: ClassVar[str] = "NOOP"


@dataclass(frozen=True, slots=True, kw_only=True)
class Logout(Command):
    name: ClassVar[str] = "LOGOUT"


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTls(Command):
    name: ClassVar[str] = "STARTTLS"


@dataclass(frozen=True, slots=True, kw_only=True)
class Login(Command):
    name: ClassVar[str] = "LOGIN"
    user: str
    password: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Authenticate(Command):
    """``initial_response``: the SASL-IR initial response (RFC 4959), decoded; ``=`` gives
    ``b""``; ``None`` when absent (the session sends an empty continuation)."""

    name: ClassVar[str] = "AUTHENTICATE"
    mechanism: str
    initial_response: bytes | None = None


@dataclass(frozen=True, slots=True)
class QResync:
    """The QRESYNC select parameter (RFC 7162 §3.2.5): what the client last knew of the
    mailbox. ``known_uids`` limits the VANISHED answer; ``seq_match`` (known sequence numbers
    and their UIDs) helps servers that forget expunges, which this one does not."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Select(Command):
    name: ClassVar[str] = "SELECT"
    mailbox: str
    condstore: bool = False
    qresync: QResync | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Examine(Command):
    name: ClassVar[str] = "EXAMINE"
    mailbox: str
    condstore: bool = False
    qresync: QResync | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Create(Command):
    """``special_use``: the CREATE-SPECIAL-USE attributes (RFC 6154 §3), the known ones in
    canonical spelling, unknown ones as given (the session answers ``NO [USEATTR]``)."""

    name: ClassVar[str] = "CREATE"
    mailbox: str
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Delete(Command):
    name: ClassVar[str] = "DELETE"
    mailbox: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Rename(Command):
    name: ClassVar[str] = "RENAME"
    old: str
    new: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscribe(Command):
    name: ClassVar[str] = "SUBSCRIBE"
    mailbox: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Unsubscribe(Command):
    name: ClassVar[str] = "UNSUBSCRIBE"
    mailbox: str


@dataclass(frozen=True, slots=True, kw_only=True)
class List(Command):
    """LIST, with the LIST-EXTENDED options (RFC 5258). ``patterns`` are decoded but otherwise
    as given (wildcards ``*`` and ``%`` included; ``inbox`` is not normalised in a pattern);
    ``selection`` from SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE; ``returns`` from
    SUBSCRIBED, CHILDREN, SPECIAL-USE, STATUS, with ``status_items`` for STATUS (RFC 5819).
    ``extended``: the extended syntax was used (selection options, a pattern list or RETURN)."""

    name: ClassVar[str] = "LIST"
    reference: str
    patterns: tuple[str, ...]
    selection: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()
    status_items: tuple[str, ...] = ()
    extended: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Lsub(Command):
    name: ClassVar[str] = "LSUB"
    reference: str
    pattern: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Status(Command):
    """``items``: upper case, without duplicates, in the client's order."""

    name: ClassVar[str] = "STATUS"
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Append(Command):
    name: ClassVar[str] = "APPEND"
    mailbox: str
    flags: tuple[str, ...] = ()
    internal_date: datetime | None = None
    message: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Check(Command):
    name: ClassVar[str] = "CHECK"


@dataclass(frozen=True, slots=True, kw_only=True)
class Close(Command):
    name: ClassVar[str] = "CLOSE"


@dataclass(frozen=True, slots=True, kw_only=True)
class Unselect(Command):
    name: ClassVar[str] = "UNSELECT"


@dataclass(frozen=True, slots=True, kw_only=True)
class Expunge(Command):
    """``uid_set``: the UIDs of UID EXPUNGE (RFC 4315 §2.1); ``None`` for EXPUNGE."""

    name: ClassVar[str] = "EXPUNGE"
    uid_set: SequenceSet | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Search(Command):
    """``charset``: upper case, US-ASCII or UTF-8, ``None`` when not given. ``returns``: the ESEARCH
    result options (RFC 4731) from MIN, MAX, ALL, COUNT (``RETURN ()`` gives ``{"ALL"}``), or
    ``None`` for a plain SEARCH, answered with an untagged SEARCH."""

    name: ClassVar[str] = "SEARCH"
    uid: bool = False
    charset: str | None = None
    key: sk.SearchKey
    returns: frozenset[str] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetch(Command):
    """``items`` as requested (macros expanded, duplicates dropped); ``changedsince`` is the
    CONDSTORE modifier (RFC 7162 §3.1.4.1). See :attr:`effective_items`."""

    name: ClassVar[str] = "FETCH"
    uid: bool = False
    sequence_set: SequenceSet
    items: tuple[FetchAttribute, ...]
    changedsince: int | None = None
    vanished: bool = False  # RFC 7162 §3.2.6: UID FETCH only, with CHANGEDSINCE

    @property
    def effective_items(self) -> tuple[FetchAttribute, ...]:
        """``items`` plus UID for UID FETCH (RFC 3501 §6.4.8) and MODSEQ with CHANGEDSINCE
        (RFC 7162 §3.1.4.1), which the responses must carry though not asked for."""
        items = list(self.items)
        names = {item.name for item in items}
        if self.uid and "UID" not in names:
            items.append(FetchAttribute("UID"))
        if self.changedsince is not None and "MODSEQ" not in names:
            items.append(FetchAttribute("MODSEQ"))
        return tuple(items)


@dataclass(frozen=True, slots=True, kw_only=True)
class Store(Command):
    """``mode``: ``"+"`` adds, ``"-"`` removes, ``""`` replaces the ``flags``; ``silent`` for
    ``FLAGS.SILENT``; ``unchangedsince``: the CONDSTORE modifier (RFC 7162 §3.1.3)."""

    name: ClassVar[str] = "STORE"
    uid: bool = False
    sequence_set: SequenceSet
    mode: typing.Literal["+", "-", ""]
    silent: bool = False
    flags: tuple[str, ...]
    unchangedsince: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Copy(Command):
    name: ClassVar[str] = "COPY"
    uid: bool = False
    sequence_set: SequenceSet
    mailbox: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Move(Command):
    name: ClassVar[str] = "MOVE"
    uid: bool = False
    sequence_set: SequenceSet
    mailbox: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Idle(Command):
    name: ClassVar[str] = "IDLE"


@dataclass(frozen=True, slots=True, kw_only=True)
class Namespace(Command):
    name: ClassVar[str] = "NAMESPACE"


@dataclass(frozen=True, slots=True, kw_only=True)
class Id(Command):
    """``params``: field names in lower case to values (RFC 2971 §3.3), ``None`` for ``ID NIL``.
    (Left out of the hash.)"""

    name: ClassVar[str] = "ID"
    params: dict[str, str | None] | None = field(default=None, hash=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Enable(Command):
    """``capabilities``: upper case, without duplicates (RFC 5161)."""

    name: ClassVar[str] = "ENABLE"
    capabilities: tuple[str, ...]


# -- the reader: tokens of the formal syntax (RFC 3501 §9) -------------------------------------

_ASTRING_8BIT = ASTRING_CHARS | frozenset(range(0x80, 0x100))


def _has_control(text: str) -> bool:
    return any(char < " " or char == "\x7f" for char in text)


class _Reader:
    """A cursor over the line text and literals of a command."""

    def __init__(self, parts: Sequence[Part], limits: ParserLimits, utf8_names: bool) -> None:
        # texts[i] is followed by literals[i]: there is always one more text than literals.
        self.texts: list[bytes] = [b""]
        self.literals: list[Literal] = []
        for part in parts:
            if isinstance(part, Literal):
                self.literals.append(part)
                self.texts.append(b"")
            else:
                self.texts[-1] += part
        self.index = 0
        self.text = self.texts[0]
        self.pos = 0
        self.tokens = 0
        self.depth = 0
        self.limits = limits
        self.utf8_names = utf8_names
        self.tag: str | None = None

    def error(self, reason: str, **kwargs: str) -> ParseError:
        return ParseError(self.tag, reason, **kwargs)

    # position

    def peek(self) -> int | None:
        """The next octet of line text (``None`` at the end of a line or before a literal)."""
        return self.text[self.pos] if self.pos < len(self.text) else None

    def peek_is(self, char: bytes) -> bool:
        return self.peek() == char[0]

    def at_literal(self) -> bool:
        return self.pos >= len(self.text) and self.index < len(self.literals)

    def at_end(self) -> bool:
        return self.pos >= len(self.text) and self.index >= len(self.literals)

    def expect(self, char: bytes, what: str) -> None:
        if not self.peek_is(char):
            raise self.error(f"expected {what}")
        self.pos += 1

    def sp(self) -> None:
        self.expect(b" ", "space")

    def open(self) -> None:
        self.expect(b"(", "(")
        self.count()

    def close(self) -> None:
        self.expect(b")", ")")

    def end(self) -> None:
        if not self.at_end():
            raise self.error("unexpected data at end of command")

    def count(self) -> None:
        self.tokens += 1
        if self.tokens > self.limits.max_args:
            raise self.error("too many arguments")

    # tokens

    def take(self, allowed: frozenset[int]) -> bytes:
        start = self.pos
        text = self.text
        while self.pos < len(text) and text[self.pos] in allowed:
            self.pos += 1
        return text[start : self.pos]

    def atom(self, what: str, allowed: frozenset[int] = ATOM_CHARS) -> str:
        data = self.take(allowed)
        if not data:
            raise self.error(f"expected {what}")
        self.count()
        return data.decode("ascii")

    def keyword(self, what: str) -> str:
        return self.atom(what).upper()

    def number(self, what: str, maximum: int = MAX_NUMBER, *, nonzero: bool = False) -> int:
        digits = self.take(_DIGITS)
        if not digits:
            raise self.error(f"expected {what}")
        self.count()
        if len(digits) > len(str(maximum)) or int(digits) > maximum:
            raise self.error(f"{what} out of range")
        value = int(digits)
        if nonzero and value == 0:
            raise self.error(f"{what} must not be zero")
        return value

    def sequence_set(self) -> SequenceSet:
        data = self.take(_SEQUENCE_CHARS)
        if not data:
            raise self.error("expected sequence set")
        self.count()
        try:
            return SequenceSet.parse(data.decode("ascii"))
        except SequenceSetError as exc:
            raise self.error(str(exc)) from None

    def literal(self) -> Literal:
        if not self.at_literal():
            raise self.error("expected literal")
        literal = self.literals[self.index]
        self.index += 1
        self.text = self.texts[self.index]
        self.pos = 0
        self.count()
        if literal.binary:
            raise self.error("literal8 not supported here")  # RFC 3516 BINARY is not offered
        return literal

    def quoted(self) -> bytes:
        text = self.text
        self.pos += 1  # the opening quote
        out = bytearray()
        while True:
            if self.pos >= len(text):
                raise self.error("unterminated quoted string")
            octet = text[self.pos]
            self.pos += 1
            if octet == 0x22:  # "
                break
            if octet == 0x5C:  # \ escapes only \ and " (RFC 3501 §9 quoted-specials)
                if self.pos >= len(text) or text[self.pos] not in b'"\\':
                    raise self.error("invalid escape in quoted string")
                octet = text[self.pos]
                self.pos += 1
            elif octet in (0x00, 0x0D, 0x0A):
                raise self.error("invalid character in quoted string")
            out.append(octet)
        self.count()
        return bytes(out)

    def string(self, what: str) -> bytes:
        """``string = quoted / literal``."""
        if self.peek_is(b'"'):
            return self.quoted()
        if self.at_literal():
            return self.literal().data
        raise self.error(f"expected {what}")

    def astring(self, what: str, allowed: frozenset[int] = ASTRING_CHARS) -> bytes:
        """``astring = 1*ASTRING-CHAR / string``."""
        if self.peek_is(b'"') or self.at_literal():
            return self.string(what)
        data = self.take(allowed)
        if not data:
            raise self.error(f"expected {what}")
        self.count()
        return data

    def nstring(self, what: str) -> bytes | None:
        if self.peek_is(b"N") or self.peek_is(b"n"):
            if self.keyword(what) != "NIL":
                raise self.error(f"expected {what}")
            return None
        return self.string(what)

    def text_of(self, data: bytes, what: str) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"invalid UTF-8 in {what}") from None

    def utf8(self, what: str) -> str:
        return self.text_of(self.astring(what), what)

    # grammar elements shared by several commands

    def mailbox(self) -> str:
        # 8-bit atoms are accepted too: raw UTF-8 names from UTF8=ACCEPT clients (RFC 6855 §3).
        return self.mailbox_name(self.astring("mailbox name", _ASTRING_8BIT), pattern=False)

    def list_mailbox(self) -> str:
        """``list-mailbox = 1*list-char / string`` (RFC 3501 §9), a LIST/LSUB pattern."""
        if self.peek_is(b'"') or self.at_literal():
            data = self.string("mailbox pattern")
        else:
            data = self.take(LIST_CHARS | frozenset(range(0x80, 0x100)))
            if not data:
                raise self.error("expected mailbox pattern")
            self.count()
        return self.mailbox_name(data, pattern=True)

    def mailbox_name(self, data: bytes, *, pattern: bool) -> str:
        name = self.text_of(data, "mailbox name")
        if _has_control(name):
            raise self.error("control character in mailbox name")
        # RFC 3501 §5.1.3: names are modified UTF-7. RFC 6855 §3: once UTF8=ACCEPT is enabled
        # they are UTF-8, and an 8-bit name can only be UTF-8 anyway.
        if name.isascii() and not self.utf8_names:
            try:
                name = mutf7.decode(name)
            except mutf7.MUTF7Error as exc:
                raise self.error(str(exc)) from None
        if _has_control(name):
            raise self.error("control character in mailbox name")
        # RFC 3501 §5.1: INBOX is case-insensitive.
        if not pattern and name.upper() == "INBOX":
            return "INBOX"
        return name

    def flag(self) -> str:
        """``flag``: a system flag in canonical spelling, or a keyword (atom) as given."""
        if self.peek_is(b"\\"):
            self.pos += 1
            name = "\\" + self.atom("flag")
            canonical = SYSTEM_FLAGS.get(name.upper())
            if canonical is None:
                if name.upper() == "\\RECENT":
                    raise self.error("\\Recent cannot be set by clients")
                raise self.error(f"unsupported system flag {name}")
            return canonical
        return self.atom("flag")

    def flag_list(self) -> tuple[str, ...]:
        """``flag-list = "(" [flag *(SP flag)] ")"``, without duplicates."""
        self.open()
        flags: list[str] = []
        if not self.peek_is(b")"):
            flags.append(self.flag())
            while self.peek_is(b" "):
                self.pos += 1
                flags.append(self.flag())
        self.close()
        return tuple(dict.fromkeys(flags))

    def parenthesised(self, item: Callable[[], str], *, empty: bool = False) -> list[str]:
        """``"(" item *(SP item) ")"`` (and ``()`` if ``empty``)."""
        self.open()
        items: list[str] = []
        if not (empty and self.peek_is(b")")):
            items.append(item())
            while self.peek_is(b" "):
                self.pos += 1
                items.append(item())
        self.close()
        return items

    def search_date(self) -> date:
        """``date = date-text / DQUOTE date-text DQUOTE`` (RFC 3501 §9)."""
        if self.peek_is(b'"'):
            text = self.quoted()
        else:
            text = self.take(ATOM_CHARS)
            self.count()
        match = _DATE.fullmatch(text.decode("latin-1"))
        if match is None:
            raise self.error("invalid date")
        day, month, year = match.groups()
        try:
            return date(int(year), MONTHS.get(month.upper(), 0), int(day))
        except ValueError:
            raise self.error("invalid date") from None

    def date_time(self) -> datetime:
        """APPEND's ``date-time``: ``"17-Jul-1996 02:44:25 -0700"``, an aware datetime."""
        match = _DATE_TIME.fullmatch(self.quoted().decode("latin-1"))
        if match is None:
            raise self.error("invalid date-time")
        day, month, year, hour, minute, second, sign, zone_h, zone_m = match.groups()
        try:
            offset = timedelta(hours=int(zone_h), minutes=int(zone_m))
            if int(zone_m) >= 60:
                raise ValueError
            zone = timezone(-offset if sign == "-" else offset)
            day_part = date(int(year), MONTHS.get(month.upper(), 0), int(day))
            return datetime.combine(day_part, time(int(hour), int(minute), int(second)), zone)
        except ValueError:
            raise self.error("invalid date-time") from None


# -- commands' arguments -------------------------------------------------------------------------


def _no_arguments(cls: type[Command]) -> Callable[[_Reader, str], Command]:
    def parse(reader: _Reader, tag: str) -> Command:
        return cls(tag=tag)

    return parse


def _login(r: _Reader, tag: str) -> Command:
    r.sp()
    user = r.utf8("user name")
    r.sp()
    return Login(tag=tag, user=user, password=r.utf8("password"))


def _authenticate(r: _Reader, tag: str) -> Command:
    r.sp()
    mechanism = r.keyword("mechanism")
    if not r.peek_is(b" "):
        return Authenticate(tag=tag, mechanism=mechanism)
    r.sp()
    # RFC 4959: initial-response = base64 / "=" (an empty response).
    data = r.take(ATOM_CHARS)
    if not data:
        raise r.error("expected initial response")
    r.count()
    if data == b"=":
        return Authenticate(tag=tag, mechanism=mechanism, initial_response=b"")
    try:
        response = base64.b64decode(data, validate=True)
    except binascii.Error:
        raise r.error("invalid base64 in initial response") from None
    return Authenticate(tag=tag, mechanism=mechanism, initial_response=response)


def _select_params(r: _Reader) -> tuple[bool, QResync | None]:
    """``[SP "(" select-param *(SP select-param) ")"]`` (RFC 4466 §2.1): CONDSTORE (RFC 7162
    §3.1.8) and QRESYNC (§3.2.5). Returns (CONDSTORE given, the QRESYNC parameter)."""
    if not r.peek_is(b" "):
        return False, None
    r.sp()
    found: dict[str, QResync | None] = {}

    def param() -> str:
        name = r.keyword("select parameter")
        if name in found or name not in ("CONDSTORE", "QRESYNC"):
            raise r.error(f"unsupported or repeated select parameter {name[:30]}")
        found[name] = _qresync(r) if name == "QRESYNC" else None
        return name

    r.parenthesised(param)
    return "CONDSTORE" in found, found.get("QRESYNC")


def _qresync(r: _Reader) -> QResync:
    """``"QRESYNC" SP "(" uidvalidity SP mod-sequence-value [SP known-uids]
    [SP seq-match-data] ")"``; seq-match-data = ``"(" known-sequence-set SP known-uid-set ")"``
    (RFC 7162 §7)."""
    r.sp()
    r.open()
    uidvalidity = r.number("uidvalidity", nonzero=True)
    r.sp()
    modseq = r.number("mod-sequence", MAX_MODSEQ)
    known: SequenceSet | None = None
    match: tuple[SequenceSet, SequenceSet] | None = None
    if r.peek_is(b" "):
        r.sp()
        if not r.peek_is(b"("):
            known = r.sequence_set()
            if r.peek_is(b" "):
                r.sp()
        if r.peek_is(b"("):
            r.open()
            sequences = r.sequence_set()
            r.sp()
            uids = r.sequence_set()
            r.close()
            match = (sequences, uids)
    r.close()
    return QResync(uidvalidity, modseq, known, match)


def _select(r: _Reader, tag: str) -> Command:
    r.sp()
    mailbox = r.mailbox()
    condstore, qresync = _select_params(r)
    return Select(tag=tag, mailbox=mailbox, condstore=condstore, qresync=qresync)


def _examine(r: _Reader, tag: str) -> Command:
    r.sp()
    mailbox = r.mailbox()
    condstore, qresync = _select_params(r)
    return Examine(tag=tag, mailbox=mailbox, condstore=condstore, qresync=qresync)


def _create(r: _Reader, tag: str) -> Command:
    r.sp()
    mailbox = r.mailbox()
    uses: list[str] = []

    def use_attr() -> str:
        r.expect(b"\\", "special-use attribute")
        name = "\\" + r.atom("special-use attribute")
        return SPECIAL_USES.get(name.upper(), name)

    if r.peek_is(b" "):
        # RFC 4466 create-params; RFC 6154 §3: create-param =/ "USE" SP "(" [use-attr ...] ")".
        r.sp()
        r.open()
        while True:
            if r.keyword("create parameter") != "USE":
                raise r.error("unsupported create parameter")
            r.sp()
            uses += r.parenthesised(use_attr, empty=True)
            if not r.peek_is(b" "):
                break
            r.sp()
        r.close()
    return Create(tag=tag, mailbox=mailbox, special_use=tuple(dict.fromkeys(uses)))


def _mailbox_command(cls: type[Delete | Subscribe | Unsubscribe]) -> Callable[[_Reader, str], Command]:
    def parse(r: _Reader, tag: str) -> Command:
        r.sp()
        return cls(tag=tag, mailbox=r.mailbox())

    return parse


def _rename(r: _Reader, tag: str) -> Command:
    r.sp()
    old = r.mailbox()
    r.sp()
    return Rename(tag=tag, old=old, new=r.mailbox())


def _status_items(r: _Reader) -> tuple[str, ...]:
    def item() -> str:
        name = r.keyword("status item")
        if name not in STATUS_ITEMS:
            raise r.error(f"unknown status item {name[:30]}")
        return name

    return tuple(dict.fromkeys(r.parenthesised(item)))


def _list(r: _Reader, tag: str) -> Command:
    # RFC 5258 §6: list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat
    #                     [SP list-return-opts]
    r.sp()
    extended = False
    selection: frozenset[str] = frozenset()
    if r.peek_is(b"("):
        extended = True

        def option() -> str:
            name = r.keyword("selection option")
            if name not in LIST_SELECT_OPTIONS:
                raise r.error(f"unsupported selection option {name[:30]}")
            return name

        selection = frozenset(r.parenthesised(option, empty=True))
        # RFC 5258 §3: RECURSIVEMATCH only makes sense with another selection option.
        if "RECURSIVEMATCH" in selection and not selection & {"SUBSCRIBED", "SPECIAL-USE"}:
            raise r.error("RECURSIVEMATCH needs another selection option")
        r.sp()
    reference = r.mailbox_name(r.astring("reference name", _ASTRING_8BIT), pattern=True)
    r.sp()
    if r.peek_is(b"("):
        extended = True
        patterns = tuple(r.parenthesised(r.list_mailbox))
    else:
        patterns = (r.list_mailbox(),)
    returns: set[str] = set()
    status_items: tuple[str, ...] = ()
    if r.peek_is(b" "):
        extended = True
        r.sp()
        if r.keyword("RETURN") != "RETURN":
            raise r.error("expected RETURN")
        r.sp()

        def return_option() -> str:
            nonlocal status_items
            option = r.keyword("return option")
            if option not in LIST_RETURN_OPTIONS:
                raise r.error(f"unsupported return option {option[:30]}")
            if option == "STATUS":  # RFC 5819: "STATUS" SP "(" status-att *(SP status-att) ")"
                if "STATUS" in returns:
                    raise r.error("STATUS given twice")
                r.sp()
                status_items = _status_items(r)
            returns.add(option)
            return option

        r.parenthesised(return_option, empty=True)
    return List(
        tag=tag,
        reference=reference,
        patterns=patterns,
        selection=selection,
        returns=frozenset(returns),
        status_items=status_items,
        extended=extended,
    )


def _lsub(r: _Reader, tag: str) -> Command:
    r.sp()
    reference = r.mailbox_name(r.astring("reference name", _ASTRING_8BIT), pattern=True)
    r.sp()
    return Lsub(tag=tag, reference=reference, pattern=r.list_mailbox())


def _status(r: _Reader, tag: str) -> Command:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    return Status(tag=tag, mailbox=mailbox, items=_status_items(r))


def _append(r: _Reader, tag: str) -> Command:
    # RFC 3501 §9: append = "APPEND" SP mailbox [SP flag-list] [SP date-time] SP literal
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    flags: tuple[str, ...] = ()
    internal_date = None
    if r.peek_is(b"("):
        flags = r.flag_list()
        r.sp()
    if r.peek_is(b'"'):
        internal_date = r.date_time()
        r.sp()
    message = r.literal().data
    return Append(tag=tag, mailbox=mailbox, flags=flags, internal_date=internal_date, message=message)


def _search(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    returns: frozenset[str] | None = None
    charset: str | None = None
    # RFC 4731: search = "SEARCH" [search-return-opts] SP search-program
    if r.text[r.pos : r.pos + 7].upper() == b"RETURN ":
        r.keyword("RETURN")
        r.sp()

        def option() -> str:
            name = r.keyword("search return option")
            if name not in SEARCH_RETURN_OPTIONS:
                raise r.error(f"unsupported search return option {name[:30]}")
            return name

        options = r.parenthesised(option, empty=True)
        returns = frozenset(options) or frozenset({"ALL"})  # RFC 4731 §3.1: () means (ALL)
        r.sp()
    if r.text[r.pos : r.pos + 8].upper() == b"CHARSET ":
        r.keyword("CHARSET")
        r.sp()
        charset = r.text_of(r.astring("charset"), "charset").upper()
        if charset not in SEARCH_CHARSETS:
            raise r.error("unsupported charset", code=BADCHARSET_CODE, status="NO")
        r.sp()
    return Search(tag=tag, uid=uid, charset=charset, key=_search_program(r), returns=returns)


_FLAG_KEYS: dict[str, sk.SearchKey] = {
    "ALL": sk.All(),
    "ANSWERED": sk.Flag("\\Answered"),
    "DELETED": sk.Flag("\\Deleted"),
    "DRAFT": sk.Flag("\\Draft"),
    "FLAGGED": sk.Flag("\\Flagged"),
    "SEEN": sk.Flag("\\Seen"),
    "UNANSWERED": sk.Flag("\\Answered", False),
    "UNDELETED": sk.Flag("\\Deleted", False),
    "UNDRAFT": sk.Flag("\\Draft", False),
    "UNFLAGGED": sk.Flag("\\Flagged", False),
    "UNSEEN": sk.Flag("\\Seen", False),
    "NEW": sk.New(),
    "OLD": sk.Old(),
    "RECENT": sk.Recent(),
}
_STRING_KEYS: dict[str, Callable[[str], sk.SearchKey]] = {
    "BCC": sk.Bcc,
    "CC": sk.Cc,
    "FROM": sk.From,
    "SUBJECT": sk.Subject,
    "TO": sk.To,
    "BODY": sk.Body,
    "TEXT": sk.Text,
}
_DATE_KEYS: dict[str, Callable[[date], sk.SearchKey]] = {
    "BEFORE": sk.Before,
    "ON": sk.On,
    "SINCE": sk.Since,
    "SENTBEFORE": sk.SentBefore,
    "SENTON": sk.SentOn,
    "SENTSINCE": sk.SentSince,
}
_NUMBER_KEYS: dict[str, Callable[[int], sk.SearchKey]] = {
    "LARGER": sk.Larger,
    "SMALLER": sk.Smaller,
    "OLDER": sk.Older,  # RFC 5032 WITHIN: seconds, nz-number
    "YOUNGER": sk.Younger,
}

_ARGUMENT_KEYS = {
    *_STRING_KEYS,
    *_DATE_KEYS,
    *_NUMBER_KEYS,
    "KEYWORD",
    "UNKEYWORD",
    "HEADER",
    "UID",
    "MODSEQ",
}


def _search_leaf(r: _Reader, word: str) -> sk.SearchKey:
    """The key named ``word`` (upper case) with its arguments, NOT/OR excepted."""
    if (key := _FLAG_KEYS.get(word)) is not None:
        return key
    if word not in _ARGUMENT_KEYS:
        raise r.error(f"unknown search key {word[:30]}")
    r.sp()
    if word in ("KEYWORD", "UNKEYWORD"):
        return sk.Keyword(r.atom("keyword"), word == "KEYWORD")
    if (string_key := _STRING_KEYS.get(word)) is not None:
        return string_key(r.utf8("search string"))
    if word == "HEADER":
        name = r.utf8("header field name")
        r.sp()
        return sk.Header(name, r.utf8("search string"))
    if (date_key := _DATE_KEYS.get(word)) is not None:
        return date_key(r.search_date())
    if (number_key := _NUMBER_KEYS.get(word)) is not None:
        return number_key(r.number(word.lower(), nonzero=word in ("OLDER", "YOUNGER")))
    if word == "UID":
        return sk.UidKey(r.sequence_set())
    if word == "MODSEQ":
        # RFC 7162 §3.1.5: "MODSEQ" [SP entry-name SP entry-type-req] SP mod-sequence-valzer
        entry_name = entry_type = None
        if r.peek_is(b'"') or r.at_literal():
            entry_name = r.text_of(r.string("entry name"), "entry name")
            r.sp()
            entry_type = r.keyword("entry type").lower()
            if entry_type not in ("priv", "shared", "all"):
                raise r.error("invalid entry type")
            r.sp()
        return sk.ModSeq(r.number("mod-sequence", MAX_MODSEQ), entry_name, entry_type)
    raise AssertionError(word)  # unreachable: _ARGUMENT_KEYS lists the keys handled above


@dataclass(slots=True)
class _Frame:
    kind: typing.Literal["program", "list", "or", "not"]
    keys: list[sk.SearchKey] = field(default_factory=list)


def _all_of(keys: list[sk.SearchKey]) -> sk.SearchKey:
    return keys[0] if len(keys) == 1 else sk.And(tuple(keys))


def _search_program(r: _Reader) -> sk.SearchKey:
    """``search-key *(SP search-key)`` up to the end of the command, without recursion: the
    stack holds the open parenthesised lists, ORs and NOTs."""
    stack = [_Frame("program")]
    while True:
        # Here a search key starts.
        if r.peek_is(b"("):
            r.open()
            r.depth += 1
            if r.depth > r.limits.max_depth:
                raise r.error("search keys nested too deeply")
            stack.append(_Frame("list"))
            continue
        if r.peek() is not None and r.peek() in _SEQUENCE_CHARS:
            key: sk.SearchKey = sk.SequenceKey(r.sequence_set())
        else:
            word = r.keyword("search key")
            if word in ("NOT", "OR"):
                r.sp()
                stack.append(_Frame("not" if word == "NOT" else "or"))
                continue
            key = _search_leaf(r, word)
        # A key is complete: hand it to the open frames, closing those it completes.
        while True:
            frame = stack[-1]
            frame.keys.append(key)
            if frame.kind == "not":
                stack.pop()
                key = sk.Not(frame.keys[0])
            elif frame.kind == "or":
                if len(frame.keys) < 2:
                    r.sp()
                    break
                stack.pop()
                key = sk.Or(frame.keys[0], frame.keys[1])
            elif frame.kind == "list":
                if not r.peek_is(b")"):
                    r.sp()
                    break
                r.close()
                r.depth -= 1
                stack.pop()
                key = _all_of(frame.keys)
            else:
                if r.at_end():
                    return _all_of(frame.keys)
                r.sp()
                break


def _section(r: _Reader) -> Section:
    """``section = "[" [section-spec] "]"`` (RFC 3501 §9), from the "["."""
    r.expect(b"[", "[")
    spec = r.take(_SECTION_CHARS).decode("ascii").upper()
    part: list[int] = []
    words: list[str] = []
    segments = spec.split(".") if spec else []
    if "" in segments:
        raise r.error("invalid section")
    for word in segments:
        if word.isdigit() and not words:
            if len(word) > 10 or word[0] == "0" or int(word) > MAX_NUMBER:
                raise r.error("invalid section part")
            part.append(int(word))
        else:
            words.append(word)
    text = ".".join(words) or None
    fields: list[str] = []
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        r.sp()

        def field_name() -> str:
            name = r.astring("header field name")
            if not name or not all(octet in _FIELD_NAME_CHARS for octet in name):
                raise r.error("invalid header field name")
            return name.decode("ascii")

        fields = r.parenthesised(field_name)
    elif text == "MIME" and not part:
        raise r.error("MIME needs a part number")
    elif text not in (None, "HEADER", "TEXT", "MIME"):
        raise r.error("invalid section")
    r.expect(b"]", "]")
    return Section(tuple(part), typing.cast("SectionText | None", text), tuple(fields))


def _fetch_attribute(r: _Reader) -> FetchAttribute:
    name = r.atom("fetch attribute", _FETCH_NAME_CHARS).upper()
    if name in ("BODY", "BODY.PEEK") and r.peek_is(b"["):
        section = _section(r)
        partial = None
        if r.peek_is(b"<"):
            r.pos += 1
            origin = r.number("partial origin")
            r.expect(b".", ".")
            partial = (origin, r.number("partial length", nonzero=True))
            r.expect(b">", ">")
        return FetchAttribute("BODY", section, name == "BODY.PEEK", partial)
    if name not in _FETCH_NAMES:
        raise r.error(f"unknown fetch attribute {name[:30]}")
    return FetchAttribute(typing.cast(FetchName, name))


def _fetch(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    sequence_set = r.sequence_set()
    r.sp()
    items: Iterable[FetchAttribute]
    if r.peek_is(b"("):
        r.open()
        attributes = [_fetch_attribute(r)]
        while r.peek_is(b" "):
            r.pos += 1
            attributes.append(_fetch_attribute(r))
        r.close()
        items = attributes
    else:
        start = r.pos
        word = r.take(ATOM_CHARS - frozenset(b"[")).decode("ascii").upper()
        macro = FETCH_MACROS.get(word)
        if macro is not None and not r.peek_is(b"["):
            r.count()
            items = macro
        else:
            r.pos = start
            items = [_fetch_attribute(r)]
    changedsince = None
    vanished = False
    if r.peek_is(b" "):
        # RFC 4466 fetch-modifiers; RFC 7162 §3.1.4.1: "CHANGEDSINCE" SP mod-sequence-value,
        # §3.2.6: "VANISHED".
        r.sp()

        def modifier() -> str:
            nonlocal changedsince, vanished
            word = r.keyword("fetch modifier")
            if word == "CHANGEDSINCE" and changedsince is None:
                r.sp()
                changedsince = r.number("mod-sequence", MAX_MODSEQ, nonzero=True)
            elif word == "VANISHED" and not vanished:
                vanished = True
            else:
                raise r.error(f"unsupported or repeated fetch modifier {word[:30]}")
            return word

        r.parenthesised(modifier)
        if vanished and (not uid or changedsince is None):
            # RFC 7162 §3.2.6: only with UID FETCH, and only together with CHANGEDSINCE.
            raise r.error("VANISHED needs UID FETCH and CHANGEDSINCE")
    return Fetch(
        tag=tag,
        uid=uid,
        sequence_set=sequence_set,
        items=tuple(dict.fromkeys(items)),
        changedsince=changedsince,
        vanished=vanished,
    )


_STORE_ITEMS: dict[str, tuple[typing.Literal["+", "-", ""], bool]] = {
    "FLAGS": ("", False),
    "FLAGS.SILENT": ("", True),
    "+FLAGS": ("+", False),
    "+FLAGS.SILENT": ("+", True),
    "-FLAGS": ("-", False),
    "-FLAGS.SILENT": ("-", True),
}


def _store(r: _Reader, tag: str, uid: bool) -> Command:
    # RFC 3501 §9 and RFC 7162 §3.1.3:
    # store = "STORE" SP sequence-set [SP "(" store-modifier ... ")"] SP store-att-flags
    r.sp()
    sequence_set = r.sequence_set()
    r.sp()
    unchangedsince = None
    if r.peek_is(b"("):

        def modifier() -> str:
            nonlocal unchangedsince
            word = r.keyword("store modifier")
            if word != "UNCHANGEDSINCE" or unchangedsince is not None:
                raise r.error(f"unsupported store modifier {word[:30]}")
            r.sp()
            unchangedsince = r.number("mod-sequence", MAX_MODSEQ)
            return word

        r.parenthesised(modifier)
        r.sp()
    item = _STORE_ITEMS.get(r.keyword("store data item"))
    if item is None:
        raise r.error("expected FLAGS, +FLAGS or -FLAGS")
    r.sp()
    if r.peek_is(b"("):
        flags = r.flag_list()
    else:
        listed = [r.flag()]
        while r.peek_is(b" "):
            r.pos += 1
            listed.append(r.flag())
        flags = tuple(dict.fromkeys(listed))
    return Store(
        tag=tag,
        uid=uid,
        sequence_set=sequence_set,
        mode=item[0],
        silent=item[1],
        flags=flags,
        unchangedsince=unchangedsince,
    )


def _copy(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    sequence_set = r.sequence_set()
    r.sp()
    return Copy(tag=tag, uid=uid, sequence_set=sequence_set, mailbox=r.mailbox())


def _move(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    sequence_set = r.sequence_set()
    r.sp()
    return Move(tag=tag, uid=uid, sequence_set=sequence_set, mailbox=r.mailbox())


def _expunge(r: _Reader, tag: str, uid: bool) -> Command:
    if not uid:
        return Expunge(tag=tag)
    r.sp()  # RFC 4315 §2.1: "UID" SP "EXPUNGE" SP sequence-set
    return Expunge(tag=tag, uid_set=r.sequence_set())


def _id(r: _Reader, tag: str) -> Command:
    # RFC 2971 §4: id_params_list ::= "(" #(string SPACE nstring) ")" / nil
    r.sp()
    if not r.peek_is(b"("):
        if r.keyword("ID parameters") != "NIL":
            raise r.error("expected ID parameter list or NIL")
        return Id(tag=tag, params=None)
    params: dict[str, str | None] = {}

    def pair() -> str:
        # RFC 2971 §3.3: at most 30 pairs, fields of 30 octets and values of 1024 at most.
        name = r.string("ID field")
        r.sp()
        value = r.nstring("ID value")
        if len(name) > 30 or (value is not None and len(value) > 1024) or len(params) >= 30:
            raise r.error("ID parameters too long")
        params[r.text_of(name, "ID field").lower()] = None if value is None else r.text_of(value, "ID value")
        return ""

    r.parenthesised(pair, empty=True)
    return Id(tag=tag, params=params)


def _enable(r: _Reader, tag: str) -> Command:
    capabilities = []
    while True:
        r.sp()
        capabilities.append(r.keyword("capability"))
        if not r.peek_is(b" "):
            break
    return Enable(tag=tag, capabilities=tuple(dict.fromkeys(capabilities)))


_COMMANDS: dict[str, Callable[[_Reader, str], Command]] = {
    "CAPABILITY": _no_arguments(Capability),
    "NOOP": _no_arguments(Noop),
    "LOGOUT": _no_arguments(Logout),
    "STARTTLS": _no_arguments(StartTls),
    "CHECK": _no_arguments(Check),
    "CLOSE": _no_arguments(Close),
    "UNSELECT": _no_arguments(Unselect),
    "IDLE": _no_arguments(Idle),
    "NAMESPACE": _no_arguments(Namespace),
    "LOGIN": _login,
    "AUTHENTICATE": _authenticate,
    "SELECT": _select,
    "EXAMINE": _examine,
    "CREATE": _create,
    "DELETE": _mailbox_command(Delete),
    "SUBSCRIBE": _mailbox_command(Subscribe),
    "UNSUBSCRIBE": _mailbox_command(Unsubscribe),
    "RENAME": _rename,
    "LIST": _list,
    "LSUB": _lsub,
    "STATUS": _status,
    "APPEND": _append,
    "ID": _id,
    "ENABLE": _enable,
}
# The commands that may follow UID (RFC 3501 §6.4.8, RFC 4315, RFC 6851); without UID too.
_UID_COMMANDS: dict[str, Callable[[_Reader, str, bool], Command]] = {
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy,
    "MOVE": _move,
    "SEARCH": _search,
    "EXPUNGE": _expunge,
}


# The FETCH item lists real clients send again and again (one FETCH per message read),
# parsed once, by the general parser, when this module loads (``_common_fetch``).
_COMMON_FETCH_ITEMS = (
    b"(BODY.PEEK[])", b"BODY.PEEK[]", b"(BODY[])", b"BODY[]", b"RFC822", b"(RFC822)",
    b"(UID BODY.PEEK[])", b"(UID RFC822.SIZE BODY.PEEK[])", b"(UID RFC822.SIZE BODY[])",
    b"(BODY.PEEK[HEADER])", b"(BODY.PEEK[TEXT])", b"(BODY.PEEK[1])", b"(BODY.PEEK[2])",
    b"FLAGS", b"(FLAGS)", b"(UID FLAGS)", b"(FLAGS UID)", b"UID", b"(UID)",
    b"(UID FLAGS RFC822.SIZE)", b"(UID RFC822.SIZE FLAGS)", b"(RFC822.SIZE)",
    b"(UID FLAGS INTERNALDATE RFC822.SIZE)", b"(FLAGS INTERNALDATE RFC822.SIZE)",
    b"(BODYSTRUCTURE)", b"(UID BODYSTRUCTURE)", b"BODYSTRUCTURE", b"(ENVELOPE)", b"(UID ENVELOPE)",
    b"ALL", b"FAST", b"FULL",
)  # fmt: skip
# "tag [UID] FETCH sequence-set items", nothing more: a command ``_common_fetch`` may answer.
_COMMON_FETCH = re.compile(
    rb"([" + re.escape(bytes(sorted(TAG_CHARS))) + rb"]{1,256}) ((?i:UID) )?(?i:FETCH) ([0-9:,*]+) (.+)",
    re.DOTALL,
)
# The general parser's limits the common forms stay far below (a handful of tokens).
_COMMON_FETCH_MIN_ARGS = 64


def _common_fetch_table() -> Mapping[bytes, tuple[FetchAttribute, ...]]:
    table = {}
    for items in _COMMON_FETCH_ITEMS:
        command = _parse_general(CommandLine((b"a FETCH 1 " + items,)), False, None)
        assert isinstance(command, Fetch)
        table[items] = command.items
    return types.MappingProxyType(table)


def _common_fetch(line: CommandLine, limits: ParserLimits | None) -> Fetch | None:
    """A FETCH of one of the common item lists, without the general parser's token-by-token
    walk (the command of a client reading messages one by one), or None: then the general
    parser reads the line. Gives what the general parser gives for the same line (tested)."""
    if len(line.parts) != 1 or (limits is not None and limits.max_args < _COMMON_FETCH_MIN_ARGS):
        return None
    text = line.parts[0]
    if not isinstance(text, bytes):
        return None
    match = _COMMON_FETCH.fullmatch(text)
    if match is None:
        return None
    items = _COMMON_FETCH_TABLE.get(match[4])
    if items is None:
        return None
    tag = match[1].decode("ascii")
    try:
        sequence_set = SequenceSet.parse(match[3].decode("ascii"))
    except SequenceSetError as exc:
        raise ParseError(tag, str(exc)) from None
    return Fetch(tag=tag, uid=match[2] is not None, sequence_set=sequence_set, items=items)


def parse_command(
    line: CommandLine, *, utf8_names: bool = False, limits: ParserLimits | None = None
) -> Command:
    """The command of ``line``; raises :class:`ParseError` and nothing else.

    ``utf8_names``: the client enabled UTF8=ACCEPT (RFC 6855), so mailbox names are UTF-8 and
    are not decoded from modified UTF-7. Without it, US-ASCII names are modified UTF-7 and 8-bit
    names are taken as UTF-8."""
    common = _common_fetch(line, limits)
    return common if common is not None else _parse_general(line, utf8_names, limits)


def _parse_general(line: CommandLine, utf8_names: bool, limits: ParserLimits | None) -> Command:
    r = _Reader(line.parts, limits or ParserLimits(), utf8_names)
    if r.at_end():
        raise ParseError(None, "empty command line")
    tag = r.take(TAG_CHARS)
    if not tag or len(tag) > 256:
        raise ParseError(None, "invalid tag")
    r.tag = tag.decode("ascii")
    r.count()
    r.sp()
    name = r.keyword("command name")
    if name == "UID":
        r.sp()
        name = r.keyword("command name")
        if (uid_parse := _UID_COMMANDS.get(name)) is None:
            raise r.error(f"UID {name[:30]} is not a command")
        command = uid_parse(r, r.tag, True)
    elif (uid_parse := _UID_COMMANDS.get(name)) is not None:
        command = uid_parse(r, r.tag, False)
    elif (parse := _COMMANDS.get(name)) is not None:
        command = parse(r, r.tag)
    else:
        raise r.error(f"unknown command {name[:30]}")
    r.end()
    return command


_COMMON_FETCH_TABLE = _common_fetch_table()
