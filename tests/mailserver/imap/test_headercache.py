"""The header cache on its own: the budget, UIDVALIDITY, sessions' reference counts and the
joined-headers prefilter."""

from __future__ import annotations

from mailserver.imap.headercache import CachedHeader, HeaderCaches
from mailserver.imap.search import plain_lowered


def entry(text: str) -> CachedHeader:
    raw = text.encode()
    return CachedHeader(raw, plain_lowered(raw))


def test_the_budget_bounds_every_account_together():
    first = entry("Subject: one\r\n\r\n")
    caches = HeaderCaches(budget=2 * first.cost + 10)
    alice, bob = caches.acquire(1), caches.acquire(2)
    assert alice.put(10, 7, 1, first) and bob.put(20, 7, 1, entry("Subject: two\r\n\r\n"))
    assert not alice.put(10, 7, 2, entry("Subject: three\r\n\r\n"))  # spent: not kept
    assert list(alice.entries(10, 7)) == [1] and caches.used == alice.size + bob.size
    caches.release(2)  # bob's last session: his cache goes, its bytes come back
    assert caches.accounts() == 1 and caches.used == alice.size
    assert alice.put(10, 7, 2, entry("Subject: three\r\n\r\n"))


def test_sessions_share_a_cache_until_the_last_one_ends():
    caches = HeaderCaches(budget=1 << 20)
    one, two = caches.acquire(1), caches.acquire(1)
    assert one is two
    one.put(10, 7, 1, entry("Subject: shared\r\n\r\n"))
    caches.release(1)
    assert two.entries(10, 7) and caches.accounts() == 1
    caches.release(1)
    assert caches.accounts() == 0 and caches.used == 0
    assert caches.acquire(1).entries(10, 7) == {}  # a new login starts empty


def test_a_new_uidvalidity_drops_the_mailbox_entries():
    caches = HeaderCaches(budget=1 << 20)
    cache = caches.acquire(1)
    cache.put(10, 7, 1, entry("Subject: old\r\n\r\n"))
    cache.put(11, 7, 1, entry("Subject: other box\r\n\r\n"))
    assert cache.entries(10, 8) == {}  # the mailbox was re-created: UID 1 is another message
    assert list(cache.entries(11, 7)) == [1] and caches.used == cache.size


def test_keep_only_forgets_expunged_messages():
    caches = HeaderCaches(budget=1 << 20)
    cache = caches.acquire(1)
    for uid in (1, 2, 3):
        cache.put(10, 7, uid, entry(f"Subject: n{uid}\r\n\r\n"))
    before = cache.size
    cache.keep_only(10, 7, [1, 3])
    assert sorted(cache.entries(10, 7)) == [1, 3] and cache.size < before and caches.used == cache.size


def test_haystack_finds_the_messages_that_may_hold_every_word():
    caches = HeaderCaches(budget=1 << 20)
    cache = caches.acquire(1)
    cache.put(10, 7, 1, entry("From: a@x.test\r\nSubject: Discharge letter\r\n\r\n"))
    cache.put(10, 7, 2, entry("From: b@x.test\r\nSubject: Prescription\r\n\r\n"))
    cache.put(10, 7, 3, entry("From: b@x.test\r\nSubject: discharge and letter\r\n\r\n"))
    cache.put(10, 7, 4, entry("Subject: =?UTF-8?Q?Lettre_de_sortie?=\r\n\r\n"))  # not plain
    hay = cache.haystack(10, 7)
    assert hay is not None
    assert hay.candidates([b"discharge"]) == {1, 3, 4}
    assert hay.candidates([b"discharge", b"b@x"]) == {3, 4}
    assert hay.candidates([b"nowhere"]) == {4}
    # A word never spans two messages' headers (they are kept apart by a NUL).
    assert hay.candidates([b"test\r\nsubject: prescription\r\n\r\nfrom"]) == {4}
    # A new message rebuilds it.
    cache.put(10, 7, 5, entry("Subject: Discharge\r\n\r\n"))
    again = cache.haystack(10, 7)
    assert again is not hay and again is not None and again.candidates([b"discharge"]) == {1, 3, 4, 5}


def test_no_haystack_when_the_budget_has_no_room_for_it():
    one = entry("Subject: only\r\n\r\n")
    caches = HeaderCaches(budget=one.cost + 4)
    cache = caches.acquire(1)
    assert cache.put(10, 7, 1, one)
    assert cache.haystack(10, 7) is None and caches.used == one.cost
