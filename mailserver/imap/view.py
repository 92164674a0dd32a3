"""A session's view of its selected mailbox: the sequence-number map and what it has told
the client so far.

RFC 3501 §2.3.1.2: sequence numbers are positions in the session's view, which changes only
when the session tells the client (EXISTS, EXPUNGE). Other sessions' changes are read from the
store as ``Changes`` and applied here at the moments the RFC allows: new messages and flag
changes after any command, expunges never during FETCH, STORE or SEARCH (§7.4.1), nor during
UID versions of them — they wait, and the expunged UIDs keep their sequence numbers until then.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from mailserver.imap.sequence import SequenceSet
from mailserver.store.mailboxes import Changes, MailboxInfo, MessageMeta


@dataclass
class Untagged:
    """What to tell the client after applying changes."""

    expunged: list[int] = field(default_factory=list)  # sequence numbers, in the order to send
    exists: int | None = None
    updated: list[tuple[int, MessageMeta]] = field(default_factory=list)  # (seq, new metadata)


class MailboxView:
    def __init__(self, info: MailboxInfo, uids: list[int], *, readonly: bool) -> None:
        self.info = info
        self.readonly = readonly
        self.uids = uids  # seq - 1 -> UID, ascending
        self.modseq = info.modseq
        self.uidnext = max(info.uidnext, (uids[-1] + 1) if uids else 1)
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

    def largest_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    @property
    def has_pending_expunges(self) -> bool:
        return bool(self._pending_expunge)

    def is_expunged(self, uid: int) -> bool:
        return uid in self._pending_expunge

    def resolve(self, sequence: SequenceSet, *, uid: bool) -> list[int]:
        """The UIDs a sequence set names, ascending. With UIDs (RFC 3501 §6.4.8), ``*`` is the
        largest UID in the mailbox and numbers that are not UIDs are ignored; with sequence
        numbers, ``*`` is the number of messages."""
        if not self.uids:
            return []
        if uid:
            largest = self.largest_uid()
            found: list[int] = []
            for span in sequence.resolve(largest):
                lo = bisect.bisect_left(self.uids, span.start)
                hi = bisect.bisect_right(self.uids, span.stop - 1)
                found.extend(self.uids[lo:hi])
            # RFC 3501 §6.4.8: "n:*" with n greater than the largest UID still names the last.
            if not found and sequence.uses_star():
                found = [largest]
            return sorted(set(found))
        total = len(self.uids)
        seqs: list[int] = []
        for span in sequence.resolve(total):
            seqs.extend(range(max(span.start, 1), min(span.stop - 1, total) + 1))
        return sorted({self.uids[s - 1] for s in seqs})

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
                    del self.uids[seq - 1]
            self._pending_expunge.clear()
        new = [m.uid for m in changes.new if m.uid >= self.uidnext]
        if new:
            self.uids.extend(sorted(new))
            self.uidnext = max(changes.uidnext, self.uids[-1] + 1)
            out.exists = len(self.uids)
        else:
            self.uidnext = max(self.uidnext, changes.uidnext)
        for meta in changes.updated:
            seq = self.seq_of(meta.uid)
            if seq is not None and meta.uid not in self._pending_expunge:
                out.updated.append((seq, meta))
        if allow_expunge or not self._pending_expunge:
            self.modseq = max(self.modseq, changes.modseq)
        return out

    def forget(self, uids: list[int]) -> list[int]:
        """This session expunged ``uids`` itself: their sequence numbers, highest first (the
        order in which EXPUNGE responses are sent)."""
        seqs: list[int] = []
        for uid in sorted(uids, reverse=True):
            seq = self.seq_of(uid)
            if seq is not None:
                seqs.append(seq)
                del self.uids[seq - 1]
            self._pending_expunge.discard(uid)
        return seqs
