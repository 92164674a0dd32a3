"""Tests for mailserver.imap.sequence: IMAP sequence sets."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.imap.sequence import MAX_NUMBER, SequenceSet, SequenceSetError


def test_parse_forms() -> None:
    s = SequenceSet.parse("1,3:5,7:*,*,9:2")
    assert s.items == ((1, 1), (3, 5), (7, None), (None, None), (9, 2))
    assert str(s) == "1,3:5,7:*,*,9:2"
    assert s.uses_star()
    assert not SequenceSet.parse("1:4").uses_star()


@pytest.mark.parametrize(
    "text",
    ["", ",", "1,", ",1", "0", "1:0", "01", "1::2", "1:2:3", "-1", "a", "1 2", "$", "4294967296", "9" * 30],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(SequenceSetError):
        SequenceSet.parse(text)


def test_largest_number_is_accepted() -> None:
    assert SequenceSet.parse(str(MAX_NUMBER)).items == ((MAX_NUMBER, MAX_NUMBER),)


def test_resolve_merges_sorts_and_clamps() -> None:
    s = SequenceSet.parse("7:*,1,3:5,2,4,*,12")
    assert s.resolve(10) == (range(1, 6), range(7, 11))
    assert list(s.iter_numbers(10)) == [1, 2, 3, 4, 5, 7, 8, 9, 10]
    assert s.count(10) == 9


def test_reversed_range_is_the_same() -> None:
    # RFC 3501 §9: n:m with n > m is m:n.
    assert SequenceSet.parse("5:2").resolve(10) == SequenceSet.parse("2:5").resolve(10)


def test_star_beyond_largest_uid() -> None:
    # RFC 3501 §6.4.8: 559:* includes the last UID even if 559 is above it.
    assert SequenceSet.parse("559:*").resolve(500) == (range(500, 501),)
    assert SequenceSet.parse("559:600").resolve(500) == ()


def test_empty_mailbox() -> None:
    assert SequenceSet.parse("1:*").resolve(0) == ()
    assert SequenceSet.parse("*").resolve(0) == ()
    assert not SequenceSet.parse("*").contains(0, 0)


def test_contains() -> None:
    s = SequenceSet.parse("2,4:6,10:*")
    assert [n for n in range(0, 15) if s.contains(n, 12)] == [2, 4, 5, 6, 10, 11, 12]
    assert SequenceSet.parse("*").contains(7, 7)
    assert not SequenceSet.parse("*").contains(6, 7)


def test_exceeds() -> None:
    assert SequenceSet.parse("1:5").exceeds(4)
    assert not SequenceSet.parse("1:4,*").exceeds(4)
    assert not SequenceSet.parse("*").exceeds(0)
    assert SequenceSet.parse("*:1").exceeds(0)


def test_one_to_star_on_a_large_mailbox_is_one_range() -> None:
    s = SequenceSet.parse("1:*")
    started = time.perf_counter()
    for _ in range(1000):
        ranges = s.resolve(100_000)
        assert s.contains(99_999, 100_000)
    assert ranges == (range(1, 100_001),)
    assert s.count(100_000) == 100_000
    assert time.perf_counter() - started < 1


def test_from_numbers_and_ranges() -> None:
    assert str(SequenceSet.from_numbers([5, 1, 2, 3, 3, 9, 10])) == "1:3,5,9:10"
    assert str(SequenceSet.from_ranges([range(4, 8), range(1, 3), range(3, 4)])) == "1:7"
    assert str(SequenceSet.from_numbers(range(1, 100_001))) == "1:100000"
    with pytest.raises(SequenceSetError):
        SequenceSet.from_numbers([])


numbers = st.integers(min_value=1, max_value=MAX_NUMBER)
bounds = st.one_of(st.none(), numbers)
sets = st.lists(st.tuples(bounds, bounds), min_size=1, max_size=8).map(
    lambda items: SequenceSet(tuple(items))
)


@given(sets)
def test_text_round_trip(s: SequenceSet) -> None:
    assert SequenceSet.parse(str(s)) == s


small = st.integers(min_value=1, max_value=60)
small_sets = st.lists(
    st.tuples(st.one_of(st.none(), small), st.one_of(st.none(), small)), min_size=1, max_size=6
)


@settings(max_examples=200)
@given(small_sets, st.integers(min_value=0, max_value=50))
def test_resolve_matches_a_naive_model(items: list[tuple[int | None, int | None]], largest: int) -> None:
    s = SequenceSet(tuple(items))
    expected: set[int] = set()
    for first, last in items:
        a = largest if first is None else first
        b = largest if last is None else last
        expected.update(n for n in range(min(a, b), max(a, b) + 1) if 1 <= n <= largest)
    assert list(s.iter_numbers(largest)) == sorted(expected)
    assert {n for n in range(0, 70) if s.contains(n, largest)} == expected
    ranges = s.resolve(largest)
    # Disjoint, sorted and not adjacent: the compact form.
    assert all(r1.stop < r2.start for r1, r2 in itertools.pairwise(ranges))
    if expected:
        assert set(SequenceSet.from_numbers(expected).iter_numbers(largest)) == expected
