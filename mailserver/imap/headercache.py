"""Opened message headers kept in memory for one account while it has an IMAP session in this
process, shared by all of that account's sessions.

A header SEARCH (FROM, SUBJECT, HEADER…) must look at every message's header. Reading them
from the sealed header index (``mailserver.store.headerindex``) costs a row and an AES-GCM
opening per message, every time; mail clients repeat such searches (Thunderbird's quick filter
sends one per keystroke), and a client often runs several connections. Dovecot answers them
from its cache file; this is ours, in memory only:

* an account's cache exists only while at least one of its sessions is logged in (the
  sessions hold the unlocked keys anyway) and is dropped with the last one;
* it never leaves the process and is never written anywhere;
* a message's header never changes, so entries are keyed by (mailbox id, UID) and a mailbox's
  entries are dropped when its UIDVALIDITY differs (RFC 3501 §2.3.1.1: UIDs are only
  meaningful with it);
* every account's cache draws on one budget of bytes for the whole process; when it is spent,
  further headers are read from the index each time, as without a cache.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# What one entry costs beyond its bytes (the tuple, the dict slot, the int key), roughly.
_OVERHEAD = 120


class CachedHeader:
    """A message's top-level header as its owner reads it; the same lower-cased when it is
    7-bit without encoded-words (``search.plain_lowered``), for the required-word prefilter;
    and the decoded, folded values of the fields searches have asked for, by lower-case name
    (filled by the search evaluation, a few dozen bytes each, not counted in the budget)."""

    __slots__ = ("fields", "header", "lowered")

    def __init__(self, header: bytes, lowered: bytes | None) -> None:
        self.header = header
        self.lowered = lowered
        self.fields: dict[str, list[str]] = {}

    @property
    def cost(self) -> int:
        return len(self.header) + (len(self.lowered) if self.lowered is not None else 0) + _OVERHEAD


@dataclass(frozen=True)
class Haystack:
    """A mailbox's plain lower-cased headers joined, to find with ``bytes.find`` (in C) the
    messages that may contain a word, instead of testing each message in Python."""

    text: bytes
    starts: list[int]  # where each message's header begins in ``text``
    uids: list[int]  # ...and whose it is
    others: list[int]  # UIDs of the cached headers that are not plain (always candidates)

    def candidates(self, words: Sequence[bytes]) -> set[int]:
        """The UIDs whose header may contain every word: those whose plain header contains
        them all, and every one that is not plain."""
        found: set[int] | None = None
        for word in words:
            hits = self._containing(word)
            found = hits if found is None else found & hits
            if not found:
                break
        return (found or set()).union(self.others)

    def _containing(self, word: bytes) -> set[int]:
        hits: set[int] = set()
        text, starts, uids = self.text, self.starts, self.uids
        pos = text.find(word)
        while pos >= 0:
            index = bisect.bisect_right(starts, pos) - 1
            hits.add(uids[index])
            following = index + 1
            if following == len(starts):
                break
            pos = text.find(word, starts[following])  # the next message: one hit is enough
        return hits


@dataclass
class _Mailbox:
    uidvalidity: int
    entries: dict[int, CachedHeader] = field(default_factory=dict)
    haystack: Haystack | None = None


class HeaderCache:
    """One account's opened headers, by mailbox and UID."""

    def __init__(self, budget: HeaderCaches) -> None:
        self._budget = budget
        self._boxes: dict[int, _Mailbox] = {}
        self.size = 0  # bytes charged to the budget

    def _box(self, mailbox_id: int, uidvalidity: int) -> _Mailbox:
        box = self._boxes.get(mailbox_id)
        if box is None or box.uidvalidity != uidvalidity:
            if box is not None:
                self._forget_haystack(box)
                self._drop(box.entries.values())
            box = self._boxes[mailbox_id] = _Mailbox(uidvalidity)
        return box

    def entries(self, mailbox_id: int, uidvalidity: int) -> dict[int, CachedHeader]:
        """The cached headers of a mailbox by UID (read it, never write it: use ``put``)."""
        return self._box(mailbox_id, uidvalidity).entries

    def put(self, mailbox_id: int, uidvalidity: int, uid: int, entry: CachedHeader) -> bool:
        """Keep ``entry``; False when the process's budget is spent (nothing kept)."""
        box = self._box(mailbox_id, uidvalidity)
        if uid in box.entries:
            return True
        if not self._budget.charge(entry.cost):
            return False
        box.entries[uid] = entry
        self._forget_haystack(box)
        self.size += entry.cost
        return True

    def keep_only(self, mailbox_id: int, uidvalidity: int, uids: Iterable[int]) -> None:
        """Forget the entries of a mailbox's messages that are gone (expunged)."""
        box = self._box(mailbox_id, uidvalidity)
        alive = set(uids)
        gone = [uid for uid in box.entries if uid not in alive]
        self._drop(box.entries.pop(uid) for uid in gone)
        if gone:
            self._forget_haystack(box)

    def haystack(self, mailbox_id: int, uidvalidity: int) -> Haystack | None:
        """The mailbox's cached plain headers joined (rebuilt after the entries change), or
        None when the budget has no room for it."""
        box = self._box(mailbox_id, uidvalidity)
        if box.haystack is None:
            parts: list[bytes] = []
            starts: list[int] = []
            uids: list[int] = []
            others: list[int] = []
            at = 0
            for uid in sorted(box.entries):
                lowered = box.entries[uid].lowered
                if lowered is None:
                    others.append(uid)
                    continue
                starts.append(at)
                uids.append(uid)
                parts.append(lowered)
                at += len(lowered) + 1
            text = b"\0".join(parts)
            if not self._budget.charge(len(text)):
                return None
            self.size += len(text)
            box.haystack = Haystack(text, starts, uids, others)
        return box.haystack

    def _forget_haystack(self, box: _Mailbox) -> None:
        if box.haystack is not None:
            self.size -= len(box.haystack.text)
            self._budget.release_bytes(len(box.haystack.text))
            box.haystack = None

    def clear(self) -> None:
        for box in self._boxes.values():
            self._forget_haystack(box)
            self._drop(box.entries.values())
        self._boxes.clear()

    def _drop(self, entries: Iterable[CachedHeader]) -> None:
        freed = sum(entry.cost for entry in entries)
        self.size -= freed
        self._budget.release_bytes(freed)


class HeaderCaches:
    """The process's header caches: one per account with a logged-in session (counted), all
    within ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._caches: dict[int, tuple[HeaderCache, int]] = {}

    def acquire(self, account_id: int) -> HeaderCache:
        """The account's cache, for a session that has just unlocked the account's keys."""
        cache, sessions = self._caches.get(account_id) or (HeaderCache(self), 0)
        self._caches[account_id] = (cache, sessions + 1)
        return cache

    def release(self, account_id: int) -> None:
        """A session of the account ended; the last one takes the cache with it."""
        cache, sessions = self._caches[account_id]
        if sessions > 1:
            self._caches[account_id] = (cache, sessions - 1)
            return
        del self._caches[account_id]
        cache.clear()

    def accounts(self) -> int:
        return len(self._caches)

    def charge(self, size: int) -> bool:
        if self.used + size > self.budget:
            return False
        self.used += size
        return True

    def release_bytes(self, size: int) -> None:
        self.used -= size
