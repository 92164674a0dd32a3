"""A session's kept rows of a mailbox, brought up to date (``backend._Snapshot``)."""

from __future__ import annotations

from mailserver.imap.backend import _Snapshot


def test_changes_and_expunges_are_applied_in_uid_order():
    kept = _Snapshot(7, 10, [(1, "", 3), (2, "\\Seen", 4), (3, "", 5)])
    assert kept.updated([], []) is kept.rows
    assert kept.updated([(2, "", 11), (4, "\\Seen", 12)], [1]) == [(2, "", 11), (3, "", 5), (4, "\\Seen", 12)]


def test_an_expunge_seen_after_the_change_wins():
    """On PostgreSQL the changed rows and the expunged UIDs are two reads: a message can show
    in both when it was expunged between them."""
    kept = _Snapshot(7, 10, [(1, "", 3), (2, "", 4)])
    assert kept.updated([(2, "\\Deleted", 11)], [2]) == [(1, "", 3)]
