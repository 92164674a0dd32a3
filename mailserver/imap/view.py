"""A session's view of its selected mailbox: the sequence-number map, each message's flags
and mod-sequence as last told to the client, and what it has told the client so far.

RFC 3501 §2.3.1.2: sequence numbers are positions in the session's view, which changes only
when the session tells the client (EXISTS, EXPUNGE). Other sessions' changes are read from the
store as ``Changes`` and applied here at the moments the RFC allows: new messages and flag
changes after any command, expunges never during FETCH, STORE or SEARCH (§7.4.1), nor during
UID versions of them — they wait, and the expunged UIDs keep their sequence numbers until then.

The flags and mod-sequences kept here (Dovecot's index, in small: three parallel lists, the
flag strings interned so that 100,000 messages with a handful of distinct flag sets cost a few
MB) answer ``FETCH (FLAGS)``, ``SEARCH UNSEEN`` and the like without asking the store: they
are exactly what the session has told the client, brought up to date by every sync.
"""

from __future__ import annotations

import bisect
import itertools
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mailserver.imap.sequence import SequenceSet
from mailserver.store.mailboxes import Changes, MailboxInfo, MessageMeta


@dataclass
class Untagged:
    """What to tell the client after applying changes."""

    expunged: list[int] = field(default_factory=list)  # sequence numbers, in the order to send
    vanished: list[int] = field(default_factory=list)  # the same messages' UIDs (RFC 7162 VANISHED)
    exists: int | None = None
    updated: list[tuple[int, MessageMeta]] = field(default_factory=list)  # (seq, new metadata)


class MailboxView:
    def __init__(self, info: MailboxInfo, rows: Iterable[tuple[int, str, int]], *, readonly: bool) -> None:
        """``rows``: (UID, flags as stored, mod-sequence) of every message, by ascending UID."""
        self.info = info
        self.readonly = readonly
        self.uids: list[int] = []  # seq - 1 -> UID, ascending
        self.flags: list[str] = []  # seq - 1 -> flags, space-separated, interned
        self.modseqs: list[int] = []  # seq - 1 -> mod-sequence of the last change told
        for uid, flags, modseq in rows:
            self.uids.append(uid)
            self.flags.append(sys.intern(flags))
            self.modseqs.append(modseq)
        self.modseq = info.modseq
        self.uidnext = max(info.uidnext, (self.uids[-1] + 1) if self.uids else 1)
        self._pending_expunge: set[int] = set()  # UIDs gone from the store, not yet told

    @property
    def exists(self) -> int:
        return len(self.uids)

    @property
    def mailbox_id(self) -> int:
        return self.info.id

    def seq_of(self, uid: int) -> int | None:
        index = bisect.bisect_left(self.uids, uid)
        return index + 1 if index < len(self.uids) and self.uids[index] == uid else None

    def uid_of(self, seq: int) -> int:
        return self.uids[seq - 1]

    def index_of(self, uid: int) -> int | None:
        index = bisect.bisect_left(self.uids, uid)
        return index if index < len(self.uids) and self.uids[index] == uid else None

    def set_flags(self, uid: int, flags: Sequence[str], modseq: int) -> None:
        """A flag change the client is being told of (its own STORE, or another session's)."""
        index = self.index_of(uid)
        if index is not None:
            self.flags[index] = sys.intern(" ".join(flags))
            self.modseqs[index] = max(self.modseqs[index], modseq)

    def unseen(self) -> tuple[int, int | None]:
        """(messages without \\Seen, sequence number of the first of them)."""
        count, first = 0, None
        seen: dict[str, bool] = {}
        for index, flags in enumerate(self.flags):
            is_seen = seen.get(flags)
            if is_seen is None:
                is_seen = seen[flags] = "\\Seen" in flags.split()
            if not is_seen:
                count += 1
                if first is None:
                    first = index + 1
        return count, first

    def largest_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    @property
    def has_pending_expunges(self) -> bool:
        return bool(self._pending_expunge)

    def is_expunged(self, uid: int) -> bool:
        return uid in self._pending_expunge

    def resolve(self, sequence: SequenceSet, *, uid: bool) -> list[int]:
        """The UIDs a sequence set names, ascending (see ``positions``)."""
        uids = self.uids
        return [uids[i] for i in self.positions(sequence, uid=uid)]

    def positions(self, sequence: SequenceSet, *, uid: bool) -> list[int]:
        """The positions (sequence number - 1) a sequence set names, ascending. With UIDs (RFC
        3501 §6.4.8), ``*`` is the largest UID in the mailbox and numbers that are not UIDs are
        ignored; with sequence numbers, ``*`` is the number of messages."""
        if not self.uids:
            return []
        total = len(self.uids)
        found: list[int] = []
        spans = 0
        if uid:
            largest = self.largest_uid()
            for span in sequence.resolve(largest):
                spans += 1
                lo = bisect.bisect_left(self.uids, span.start)
                hi = bisect.bisect_right(self.uids, span.stop - 1)
                found.extend(range(lo, hi))
            # RFC 3501 §6.4.8: "n:*" with n greater than the largest UID still names the last.
            if not found and sequence.uses_star():
                found = [total - 1]
        else:
            for span in sequence.resolve(total):
                spans += 1
                found.extend(range(max(span.start, 1) - 1, min(span.stop - 1, total)))
        if spans <= 1:
            return found  # one range: ascending and unique already (the common "1:*")
        if len(found) == total and _ascending_unique(found):
            return found
        return sorted(set(found))

    def sequence_out_of_range(self, sequence: SequenceSet) -> bool:
        """RFC 3501 §9: a sequence number greater than the number of messages is invalid."""
        return sequence.exceeds(len(self.uids))

    def apply(self, changes: Changes, *, allow_expunge: bool) -> Untagged:
        out = Untagged()
        self._pending_expunge.update(uid for uid in changes.expunged if self.seq_of(uid) is not None)
        if allow_expunge and self._pending_expunge:
            # From the highest sequence number down: each number sent is valid when sent.
            for uid in sorted(self._pending_expunge, reverse=True):
                seq = self.seq_of(uid)
                if seq is not None:
                    out.expunged.append(seq)
                    out.vanished.append(uid)
                    self._drop(seq - 1)
            self._pending_expunge.clear()
        new = sorted((m for m in changes.new if m.uid >= self.uidnext), key=lambda m: m.uid)
        if new:
            for meta in new:
                self.uids.append(meta.uid)
                self.flags.append(sys.intern(" ".join(meta.flags)))
                self.modseqs.append(meta.modseq)
            self.uidnext = max(changes.uidnext, self.uids[-1] + 1)
            out.exists = len(self.uids)
        else:
            self.uidnext = max(self.uidnext, changes.uidnext)
        for meta in changes.updated:
            seq = self.seq_of(meta.uid)
            if seq is not None and meta.uid not in self._pending_expunge:
                out.updated.append((seq, meta))
                self.set_flags(meta.uid, meta.flags, meta.modseq)
        if allow_expunge or not self._pending_expunge:
            self.modseq = max(self.modseq, changes.modseq)
        return out

    def forget(self, uids: list[int]) -> list[tuple[int, int]]:
        """This session expunged ``uids`` itself: (sequence number, UID) of those it had,
        highest first (the order in which EXPUNGE responses are sent)."""
        told: list[tuple[int, int]] = []
        for uid in sorted(uids, reverse=True):
            seq = self.seq_of(uid)
            if seq is not None:
                told.append((seq, uid))
                self._drop(seq - 1)
            self._pending_expunge.discard(uid)
        return told

    def _drop(self, index: int) -> None:
        del self.uids[index]
        del self.flags[index]
        del self.modseqs[index]


def _ascending_unique(found: list[int]) -> bool:
    """``found`` is 0, 1, ... len - 1 (the common ``1:*``): no need to sort it."""
    if not found:
        return True
    return found[0] == 0 and found[-1] == len(found) - 1 and all(b > a for a, b in itertools.pairwise(found))
