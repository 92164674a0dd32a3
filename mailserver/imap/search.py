"""Evaluation of a SEARCH key tree (:mod:`mailserver.imap.searchkeys`) against one message.

RFC 3501 §6.4.4 semantics, with these choices where the RFC leaves room:

* BEFORE / ON / SINCE compare the *date* of the internal date, in the internal date's own
  time zone, "disregarding time and timezone" as the RFC says.  SENTBEFORE / SENTON /
  SENTSINCE do the same with the Date: header (the date as written, in its own zone); a
  missing or unparsable Date: falls back to the internal date, as RFC 5256 §2.2 does for SORT.
* FROM, TO, CC, BCC, SUBJECT and HEADER are case-insensitive substring matches on the field
  value *decoded*: folding removed, 8-bit octets read as UTF-8 (RFC 6532, else Latin-1) and
  RFC 2047 encoded-words decoded, so that ``SUBJECT "é"`` finds ``=?ISO-8859-1?Q?=E9?=``.
  Every occurrence of the field is searched.  ``HEADER name ""`` matches when the field exists.
* BODY searches the decoded text of the ``text/*`` parts (Content-Transfer-Encoding undone,
  charset decoded, HTML tags dropped and entities resolved) and the header of every
  encapsulated message/rfc822 message (a forwarded mail's Subject is part of the body).
  TEXT is the top-level header or BODY.
* Comparison: both sides are NFKC-normalised and case-folded (Unicode, close to RFC 5051
  i;unicode-casemap); runs of white space count as one space, and white space at either end
  of the search string is ignored.
* This server has no ``\\Recent`` (RFC 9051 removed it): RECENT and NEW never match, OLD always.
* Flags and keywords compare case-insensitively.

Laziness: the message content is obtained from the target only when a key needs it (see
:func:`needs_message`), and keys that do not are evaluated first, so a flag-only search never
reads a body, and ``SEEN BODY x`` reads none of the unseen ones.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import re
import unicodedata
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from email.utils import parsedate_tz
from typing import Protocol

from mailserver.imap.mime import MimePart, parse_message, unfold
from mailserver.imap.searchkeys import (
    All,
    And,
    Bcc,
    Before,
    Body,
    Cc,
    Flag,
    From,
    Header,
    Keyword,
    Larger,
    ModSeq,
    New,
    Not,
    Old,
    Older,
    On,
    Or,
    Recent,
    SearchKey,
    SentBefore,
    SentOn,
    SentSince,
    SequenceKey,
    Since,
    Smaller,
    Subject,
    Text,
    To,
    UidKey,
    Younger,
)

__all__ = [
    "CompiledSearch",
    "MessageText",
    "SearchContext",
    "SearchMessage",
    "SearchTarget",
    "decode_header_value",
    "fold_text",
    "matches",
    "needs_message",
    "plain_lowered",
]


class SearchTarget(Protocol):
    """What SEARCH needs to know of one message.  Attributes may be plain attributes or
    properties; :meth:`load_message` is only called when a key looks at the content."""

    @property
    def seq(self) -> int: ...
    @property
    def uid(self) -> int: ...
    @property
    def flags(self) -> Set[str]: ...
    @property
    def internal_date(self) -> datetime: ...  # aware
    @property
    def size(self) -> int: ...  # RFC822.SIZE
    @property
    def modseq(self) -> int: ...

    def load_message(self) -> bytes:
        """The message octets (decrypted)."""
        ...


@dataclass
class SearchMessage:
    """A ready-made :class:`SearchTarget`: metadata plus a *loader* called at most once."""

    seq: int
    uid: int
    flags: Set[str]
    internal_date: datetime
    size: int
    modseq: int
    loader: Callable[[], bytes]
    # Decoded, folded top-level field values by lower-case name, kept by the caller across
    # searches (the session's header cache): filled on first use, read after.
    fields: dict[str, list[str]] | None = None
    _data: bytes | None = field(default=None, init=False, repr=False)

    def load_message(self) -> bytes:
        if self._data is None:
            self._data = self.loader()
        return self._data


#: ``(sequence_set, number) -> bool``: whether *number* is in the set (as the session resolves
#: ``*`` against the mailbox).
SetMembership = Callable[[object, int], bool]


@dataclass(frozen=True, slots=True)
class SearchContext:
    """What the evaluation needs from the session: membership tests for sequence sets of
    message sequence numbers and of UIDs, and the current time (OLDER / YOUNGER)."""

    in_sequence_set: SetMembership
    in_uid_set: SetMembership
    now: datetime | None = None


# --- Text decoding -------------------------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=")
_ONLY_SPACE = re.compile(r"[ \t\r\n]*")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
# An HTML tag.  "[^<>]" keeps the scan linear even on "<<<<..." without any ">".
_TAG = re.compile(r"<[^<>]*>")


def plain_lowered(raw: bytes) -> bytes | None:
    """``raw`` in lower case when it is 7-bit and has no RFC 2047 encoded-word: then decoding
    a header field is only unfolding, and folding it for comparison only lower-casing."""
    return raw.lower() if raw.isascii() and b"=?" not in raw else None


def _cannot_contain(lowered: bytes | None, needle: str) -> bool:
    """Whether a folded ``needle`` certainly occurs in no field of a message whose plain
    lower-cased octets are ``lowered`` (see ``_Evaluation._plain_lowered``).  Only decided for
    an ASCII needle without white space: unfolding removes only CRLFs before white space,
    which such a needle cannot span, so each match is a substring of the octets."""
    if lowered is None or not needle.isascii() or " " in needle:
        return False
    return needle.encode() not in lowered


def fold_text(text: str) -> str:
    """The form both sides of a text match are compared in (see module doc)."""
    # str.split() finds the white space runs at C speed (a regex is 4 times slower on 25 MB).
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _lenient_base64(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        pass
    cleaned = _NOT_BASE64.sub(b"", data)
    cleaned = cleaned[: len(cleaned) - (len(cleaned) % 4 == 1)]
    try:
        return base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        return b""


def _decode_charset(data: bytes, charset: str | None) -> str:
    """*data* decoded with *charset*; without a usable one (or for US-ASCII, which 8-bit mail
    often wrongly claims), UTF-8 if it is valid, else Latin-1."""
    if charset:
        charset = charset.strip().strip('"').lower()
    if charset and charset not in ("us-ascii", "ascii", "unknown-8bit", "x-unknown"):
        try:
            codecs.lookup(charset)
            return data.decode(charset, "replace")
        except (LookupError, ValueError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _decode_word(charset: str, encoding: str, payload: str) -> str:
    raw = payload.encode("utf-8", "replace")
    data = _lenient_base64(raw) if encoding in "Bb" else binascii.a2b_qp(raw, header=True)
    return _decode_charset(data, charset.partition("*")[0])  # RFC 2231 §5: charset*language


def decode_header_value(raw: bytes) -> str:
    """A header field value as text: unfolded, 8-bit octets read as UTF-8 (else Latin-1), RFC
    2047 encoded-words decoded (anywhere, even inside quoted strings, as mailers use them), the
    white space between adjacent encoded-words dropped (RFC 2047 §6.2)."""
    text = _decode_charset(unfold(raw), None)
    if "=?" not in text:
        return text
    out: list[str] = []
    pos = 0
    previous_was_word = False
    for match in _ENCODED_WORD.finditer(text):
        gap = text[pos : match.start()]
        if not (previous_was_word and _ONLY_SPACE.fullmatch(gap)):
            out.append(gap)
        out.append(_decode_word(match.group(1), match.group(2), match.group(3)))
        pos = match.end()
        previous_was_word = True
    out.append(text[pos:])
    return "".join(out)


def _part_text(part: MimePart) -> str:
    """The decoded text of a text/* part."""
    data = part.body_bytes()
    encoding = part.transfer_encoding
    if encoding == "base64":
        data = _lenient_base64(data)
    elif encoding == "quoted-printable":
        data = binascii.a2b_qp(data)
    text = _decode_charset(data, part.charset)
    if part.media_subtype.lower() in (b"html", b"xhtml+xml"):
        text = html.unescape(_TAG.sub(" ", text))
    return text


class MessageText:
    """The searchable forms of one message, each computed on first use."""

    def __init__(self, tree: MimePart) -> None:
        self.tree = tree
        self._fields: dict[str, list[str]] | None = None
        self._header_text: str | None = None
        self._body: list[str] | None = None

    def field_values(self, name: str) -> list[str]:
        """Folded, decoded values of every top-level field called *name* (each name decoded
        on first use: a SUBJECT search decodes no other field)."""
        key = name.lower()
        if self._fields is None:
            self._fields = {}
        values = self._fields.get(key)
        if values is None:
            header = self.tree.header
            values = self._fields[key] = [
                fold_text(decode_header_value(header.raw_value(item)))
                for item in header.fields
                if item.name is not None and item.name.lower() == key
            ]
        return values

    def header_text(self) -> str:
        """The whole top-level header, decoded and folded."""
        if self._header_text is None:
            self._header_text = _header_text(self.tree)
        return self._header_text

    def body_texts(self) -> list[str]:
        """Folded text of every text part, and headers of encapsulated messages."""
        if self._body is None:
            texts: list[str] = []
            _collect_body(self.tree, texts)
            self._body = texts
        return self._body

    def sent_date(self) -> date | None:
        """The date of the Date: field, in its own zone; ``None`` if absent or unparsable."""
        raw = self.tree.header.get("Date")
        if raw is None:
            return None
        try:
            parsed = parsedate_tz(decode_header_value(raw))
            if parsed is None:
                return None
            return date(parsed[0], parsed[1], parsed[2])
        except (ValueError, TypeError, IndexError, OverflowError):
            return None


def _header_text(message: MimePart) -> str:
    header = message.header
    lines = []
    for item in header.fields:
        if item.name is None:
            lines.append(decode_header_value(header.field_bytes(item)))
        else:
            lines.append(item.name + ": " + decode_header_value(header.raw_value(item)))
    return fold_text("\n".join(lines))


def _collect_body(part: MimePart, texts: list[str]) -> None:
    if part.is_multipart:
        for child in part.children:
            _collect_body(child, texts)
    elif part.message is not None:
        texts.append(_header_text(part.message))
        _collect_body(part.message, texts)
    elif part.is_text:
        texts.append(fold_text(_part_text(part)))


# --- Evaluation ----------------------------------------------------------------------------

_CONTENT_KEYS = (Header, From, To, Cc, Bcc, Subject, Body, Text, SentBefore, SentOn, SentSince)
_BODY_KEYS = (Body, Text)  # the others read the top-level header only


def _children(key: SearchKey) -> tuple[SearchKey, ...]:
    if isinstance(key, And):
        return key.keys
    if isinstance(key, Or):
        return (key.left, key.right)
    if isinstance(key, Not):
        return (key.key,)
    return ()


class CompiledSearch:
    """A search key prepared once per SEARCH command, then matched against each message.

    Preparation records, for every node, whether it needs the message content and the order in
    which to try the operands of AND and OR (metadata-only ones first).  Neither preparation
    nor evaluation recurses: ``NOT NOT NOT ...`` or ``OR OR OR ...`` chains as long as a
    command can hold cannot exhaust Python's stack.
    """

    __slots__ = ("_needs", "_order", "key", "needs_body")

    def __init__(self, key: SearchKey) -> None:
        self.key = key
        self._needs: dict[int, bool] = {}
        self._order: dict[int, tuple[SearchKey, ...]] = {}
        # Whether a key may read past the top-level header (BODY, TEXT): without one, the
        # message's header alone answers (a search index of headers may stand in for it).
        self.needs_body = False
        stack: list[tuple[SearchKey, bool]] = [(key, False)]
        while stack:  # iterative post-order walk
            node, expanded = stack.pop()
            if id(node) in self._needs:
                continue
            children = _children(node)
            if not children and not isinstance(node, And):
                self._needs[id(node)] = isinstance(node, _CONTENT_KEYS)
                self.needs_body = self.needs_body or isinstance(node, _BODY_KEYS)
            elif not expanded:
                stack.append((node, True))
                stack.extend((child, False) for child in children)
            else:
                needs = self._needs
                self._needs[id(node)] = any(needs[id(child)] for child in children)
                self._order[id(node)] = tuple(sorted(children, key=lambda c: needs[id(c)]))

    @property
    def needs_message(self) -> bool:
        """Whether matching may read the message content (not only its metadata)."""
        return self._needs[id(self.key)]

    def required_words(self) -> tuple[bytes, ...]:
        """Needles every matching message's header must contain, when it is plain 7-bit text
        (see ``plain_lowered``): those of the header keys the whole key is a conjunction of
        (not under OR or NOT), ASCII and without white space (``_cannot_contain``)."""
        words: list[bytes] = []
        stack = [self.key]
        while stack:
            node = stack.pop()
            if isinstance(node, And):
                stack.extend(node.keys)
            elif isinstance(node, Header | From | To | Cc | Bcc | Subject):
                needle = fold_text(node.value)
                if needle and needle.isascii() and " " not in needle:
                    words.append(needle.encode())
        return tuple(words)

    def matches(self, target: SearchTarget, context: SearchContext) -> bool:
        """Whether *target* satisfies the key.  Never raises because of the message content;
        raises TypeError for an object that is not a known search key."""
        evaluation = _Evaluation(target, context)
        # Explicit stack: (node, index of the next operand to evaluate).
        stack: list[tuple[SearchKey, int]] = [(self.key, 0)]
        values: list[bool] = []
        while stack:
            node, index = stack.pop()
            if isinstance(node, Not):
                if index == 0:
                    stack.append((node, 1))
                    stack.append((node.key, 0))
                else:
                    values.append(not values.pop())
            elif isinstance(node, And | Or):
                operands = self._order[id(node)]
                stop = isinstance(node, Or)  # the value that decides: True for OR, False for AND
                if index > 0 and values[-1] is stop:
                    continue  # short-circuit: the operand's value is the node's value
                if index < len(operands):
                    if index > 0:
                        values.pop()
                    stack.append((node, index + 1))
                    stack.append((operands[index], 0))
                elif index == 0:
                    values.append(True)  # an empty AND
            else:
                values.append(bool(evaluation.leaf(node)))
        return values[-1]


def needs_message(key: SearchKey) -> bool:
    """Whether evaluating *key* may need the message content (not only its metadata)."""
    return CompiledSearch(key).needs_message


def matches(key: SearchKey, target: SearchTarget, context: SearchContext) -> bool:
    """Whether the message *target* satisfies *key* (for many messages, build one
    :class:`CompiledSearch` and call its ``matches``)."""
    return CompiledSearch(key).matches(target, context)


class _Evaluation:
    """One message being matched: the leaf keys, and the lazily loaded content."""

    __slots__ = ("_flags", "_lowered", "_raw", "_text", "context", "target")

    def __init__(self, target: SearchTarget, context: SearchContext) -> None:
        self.target = target
        self.context = context
        self._flags: set[str] | None = None
        self._text: MessageText | None = None
        self._raw: bytes | None = None
        self._lowered: bytes | None = None  # _raw in lower case, when it is plain ASCII text

    @property
    def flags(self) -> set[str]:
        if self._flags is None:
            self._flags = {flag.lower() for flag in self.target.flags}
        return self._flags

    def _load(self) -> bytes:
        if self._raw is None:
            self._raw = self.target.load_message()
        return self._raw

    @property
    def text(self) -> MessageText:
        if self._text is None:
            self._text = MessageText(parse_message(self._load()))
        return self._text

    def header_contains(self, name: str, value: str) -> bool:
        needle = fold_text(value)
        if needle and _cannot_contain(self._plain_lowered(), needle):
            return False  # decided without parsing or decoding anything
        return any(needle in candidate for candidate in self._field_values(name))

    def _field_values(self, name: str) -> list[str]:
        kept: dict[str, list[str]] | None = getattr(self.target, "fields", None)
        if kept is None:
            return self.text.field_values(name)
        key = name.lower()
        values = kept.get(key)
        if values is None:
            values = kept[key] = self.text.field_values(name)
        return values

    def _plain_lowered(self) -> bytes | None:
        """See ``plain_lowered``; computed once per message."""
        if self._lowered is None:
            self._lowered = plain_lowered(self._load()) or b""
        return self._lowered or None

    def sent_date(self) -> date:
        sent = self.text.sent_date()
        return sent if sent is not None else self.target.internal_date.date()

    def body_contains(self, value: str) -> bool:
        needle = fold_text(value)
        return not needle or any(needle in text for text in self.text.body_texts())

    def now(self) -> datetime:
        if self.context.now is not None:
            return self.context.now
        return datetime.now(self.target.internal_date.tzinfo)

    def leaf(self, key: SearchKey) -> bool:
        """The value of a key that is not AND, OR or NOT."""
        match key:
            case All():
                return True
            case SequenceKey(sequence_set):
                return self.context.in_sequence_set(sequence_set, self.target.seq)
            case UidKey(sequence_set):
                return self.context.in_uid_set(sequence_set, self.target.uid)
            case Flag(name, present) | Keyword(name, present):
                return (name.lower() in self.flags) == present
            case New() | Recent():
                return False  # no \Recent in this server
            case Old():
                return True
            case Before(day):
                return self.target.internal_date.date() < day
            case On(day):
                return self.target.internal_date.date() == day
            case Since(day):
                return self.target.internal_date.date() >= day
            case SentBefore(day):
                return self.sent_date() < day
            case SentOn(day):
                return self.sent_date() == day
            case SentSince(day):
                return self.sent_date() >= day
            case Older(seconds):
                return self.target.internal_date <= self.now() - timedelta(seconds=seconds)
            case Younger(seconds):
                return self.target.internal_date > self.now() - timedelta(seconds=seconds)
            case Larger(size):
                return self.target.size > size
            case Smaller(size):
                return self.target.size < size
            case ModSeq(modseq):
                return self.target.modseq >= modseq
            case Header(name, value):
                return self.header_contains(name, value)
            case From(value):
                return self.header_contains("From", value)
            case To(value):
                return self.header_contains("To", value)
            case Cc(value):
                return self.header_contains("Cc", value)
            case Bcc(value):
                return self.header_contains("Bcc", value)
            case Subject(value):
                return self.header_contains("Subject", value)
            case Body(value):
                return self.body_contains(value)
            case Text(value):
                needle = fold_text(value)
                return not needle or needle in self.text.header_text() or self.body_contains(value)
        raise TypeError(f"unknown search key: {key!r}")
