"""The SEARCH key tree (RFC 3501 §6.4.4), as plain immutable data.

The command parser builds these; :mod:`mailserver.imap.search` evaluates them against one
message.  One class per key, with the key's argument; the "UN" keys and the flag keys share
classes:

==========================  ===================================================
``ALL``                     ``All()``
``ANSWERED`` / ``UNANSWERED``  ``Flag("\\Answered", True)`` / ``Flag("\\Answered", False)``
``DELETED`` / ``UNDELETED``    ``Flag("\\Deleted", ...)``
``DRAFT`` / ``UNDRAFT``        ``Flag("\\Draft", ...)``
``FLAGGED`` / ``UNFLAGGED``    ``Flag("\\Flagged", ...)``
``SEEN`` / ``UNSEEN``          ``Flag("\\Seen", ...)``
``KEYWORD f`` / ``UNKEYWORD f``  ``Keyword("f", True)`` / ``Keyword("f", False)``
``NEW`` ``OLD`` ``RECENT``     ``New()`` ``Old()`` ``Recent()``
``BEFORE d`` ``ON d`` ``SINCE d``  ``Before(date)`` ``On(date)`` ``Since(date)``
``SENTBEFORE d`` ...        ``SentBefore(date)`` ``SentOn(date)`` ``SentSince(date)``
``LARGER n`` ``SMALLER n``  ``Larger(n)`` ``Smaller(n)``
``FROM s`` ``TO s`` ``CC s`` ``BCC s`` ``SUBJECT s``  ``From(s)`` ``To(s)`` ``Cc(s)`` ``Bcc(s)``
                            ``Subject(s)``
``HEADER name s``           ``Header("name", s)``
``BODY s`` ``TEXT s``       ``Body(s)`` ``Text(s)``
``UID set``                 ``UidKey(set)``
sequence-set                ``SequenceKey(set)``
``NOT k``                   ``Not(k)``
``OR k1 k2``                ``Or(k1, k2)``
``(k1 k2 ...)``, and the top-level list  ``And((k1, k2, ...))``
``MODSEQ [entry type] n``   ``ModSeq(n, entry_name, entry_type)`` (RFC 7162 §3.1.5)
``OLDER n`` ``YOUNGER n``   ``Older(seconds)`` ``Younger(seconds)`` (RFC 5032)
==========================  ===================================================

Strings are ``str`` (already decoded from the SEARCH CHARSET); dates are ``datetime.date``.
The sequence-set argument is opaque here (the parser's own set type): the evaluator asks the
session, through callables, whether a number is in it, since ``*`` depends on the mailbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

__all__ = [
    "All",
    "And",
    "Bcc",
    "Before",
    "Body",
    "Cc",
    "Flag",
    "From",
    "Header",
    "Keyword",
    "Larger",
    "ModSeq",
    "New",
    "Not",
    "Old",
    "Older",
    "On",
    "Or",
    "Recent",
    "SearchKey",
    "SentBefore",
    "SentOn",
    "SentSince",
    "SequenceKey",
    "Since",
    "Smaller",
    "Subject",
    "Text",
    "To",
    "UidKey",
    "Younger",
]


class SearchKey:
    """Base class of every search key."""

    __slots__ = ()


# --- Structure ---


@dataclass(frozen=True, slots=True)
class All(SearchKey):
    """ALL: every message."""


@dataclass(frozen=True, slots=True)
class And(SearchKey):
    """A parenthesized list of keys, or the list of keys of the command: all must match."""

    keys: tuple[SearchKey, ...]


@dataclass(frozen=True, slots=True)
class Or(SearchKey):
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class Not(SearchKey):
    key: SearchKey


# --- Message numbers ---


@dataclass(frozen=True, slots=True)
class SequenceKey(SearchKey):
    """A bare sequence-set: message sequence numbers."""

    sequence_set: object


@dataclass(frozen=True, slots=True)
class UidKey(SearchKey):
    """UID sequence-set."""

    sequence_set: object


# --- Flags ---


@dataclass(frozen=True, slots=True)
class Flag(SearchKey):
    """A system flag (``\\Seen``...) set (*present*) or not: SEEN / UNSEEN etc."""

    name: str
    present: bool = True


@dataclass(frozen=True, slots=True)
class Keyword(SearchKey):
    """KEYWORD / UNKEYWORD."""

    name: str
    present: bool = True


@dataclass(frozen=True, slots=True)
class New(SearchKey):
    """NEW: \\Recent and not \\Seen."""


@dataclass(frozen=True, slots=True)
class Old(SearchKey):
    """OLD: not \\Recent."""


@dataclass(frozen=True, slots=True)
class Recent(SearchKey):
    """RECENT: \\Recent."""


# --- Dates ---


@dataclass(frozen=True, slots=True)
class Before(SearchKey):
    """BEFORE: internal date earlier than *date*."""

    date: date


@dataclass(frozen=True, slots=True)
class On(SearchKey):
    """ON: internal date within *date*."""

    date: date


@dataclass(frozen=True, slots=True)
class Since(SearchKey):
    """SINCE: internal date within or later than *date*."""

    date: date


@dataclass(frozen=True, slots=True)
class SentBefore(SearchKey):
    """SENTBEFORE: Date: header earlier than *date*."""

    date: date


@dataclass(frozen=True, slots=True)
class SentOn(SearchKey):
    """SENTON: Date: header within *date*."""

    date: date


@dataclass(frozen=True, slots=True)
class SentSince(SearchKey):
    """SENTSINCE: Date: header within or later than *date*."""

    date: date


@dataclass(frozen=True, slots=True)
class Older(SearchKey):
    """OLDER (RFC 5032): internal date at least *seconds* ago."""

    seconds: int


@dataclass(frozen=True, slots=True)
class Younger(SearchKey):
    """YOUNGER (RFC 5032): internal date less than *seconds* ago."""

    seconds: int


# --- Sizes and mod-sequences ---


@dataclass(frozen=True, slots=True)
class Larger(SearchKey):
    """LARGER: RFC822.SIZE greater than *size*."""

    size: int


@dataclass(frozen=True, slots=True)
class Smaller(SearchKey):
    """SMALLER: RFC822.SIZE smaller than *size*."""

    size: int


@dataclass(frozen=True, slots=True)
class ModSeq(SearchKey):
    """MODSEQ (RFC 7162 §3.1.5): mod-sequence equal to or greater than *modseq*.  The optional
    entry name and type (per-flag mod-sequences) are accepted and ignored, as RFC 7162 allows
    a server that does not keep them separately."""

    modseq: int
    entry_name: str | None = None
    entry_type: str | None = None


# --- Header and body text ---


@dataclass(frozen=True, slots=True)
class Header(SearchKey):
    """HEADER field-name string; an empty *value* matches every message having the field."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class From(SearchKey):
    value: str


@dataclass(frozen=True, slots=True)
class To(SearchKey):
    value: str


@dataclass(frozen=True, slots=True)
class Cc(SearchKey):
    value: str


@dataclass(frozen=True, slots=True)
class Bcc(SearchKey):
    value: str


@dataclass(frozen=True, slots=True)
class Subject(SearchKey):
    value: str


@dataclass(frozen=True, slots=True)
class Body(SearchKey):
    """BODY: the text of the message body."""

    value: str


@dataclass(frozen=True, slots=True)
class Text(SearchKey):
    """TEXT: the header or the body."""

    value: str
