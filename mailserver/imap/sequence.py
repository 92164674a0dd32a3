"""Sequence sets (RFC 3501 §9 ``sequence-set``): parsing, resolution to ranges, compact formatting.

A set such as ``1,3:5,7:*`` is kept as the client wrote it (a tuple of ``(first, last)`` pairs where
``None`` stands for ``*``) and only turned into numbers against the mailbox's largest message
sequence number or UID, as ``range`` objects: ``1:*`` on a mailbox of 100,000 messages is one
``range``, never a list.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# RFC 3501 §9: nz-number is a non-zero 32-bit unsigned integer.
MAX_NUMBER = 2**32 - 1

Bound = int | None
"""One end of a range: a number, or ``None`` for ``*`` (the largest number in use)."""


class SequenceSetError(ValueError):
    """The text is not a valid ``sequence-set``."""


def _parse_number(text: str) -> Bound:
    if text == "*":
        return None
    # nz-number = digit-nz *DIGIT: no sign, no leading zero, and at most 32 bits.
    if not text or len(text) > 10 or not text.isascii() or not text.isdigit() or text[0] == "0":
        raise SequenceSetError(f"invalid number in sequence set: {text[:20]!r}")
    value = int(text)
    if value > MAX_NUMBER:
        raise SequenceSetError(f"number out of range in sequence set: {text}")
    return value


def _format_bound(bound: Bound) -> str:
    return "*" if bound is None else str(bound)


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A ``sequence-set`` as written: ``items`` are ``(first, last)`` pairs, ``None`` meaning ``*``;
    a single number ``n`` is ``(n, n)``. RFC 3501 §9: ``n:m`` with ``n > m`` is the same as ``m:n``,
    and ``*`` is the largest number in use (the message count, or the largest UID)."""

    items: tuple[tuple[Bound, Bound], ...]

    def __post_init__(self) -> None:
        if not self.items:
            raise SequenceSetError("empty sequence set")

    @classmethod
    def parse(cls, text: str) -> SequenceSet:
        """Parse ``1,3:5,7:*``; raises :class:`SequenceSetError` on anything else."""
        items: list[tuple[Bound, Bound]] = []
        for element in text.split(","):
            first, colon, last = element.partition(":")
            start = _parse_number(first)
            items.append((start, _parse_number(last) if colon else start))
        return cls(tuple(items))

    @classmethod
    def from_ranges(cls, ranges: Iterable[range]) -> SequenceSet:
        """The compact set of the given step-1 ranges (sorted and merged), e.g. for ESEARCH or
        COPYUID responses. Raises :class:`SequenceSetError` if they hold no number."""
        return cls(tuple((r.start, r.stop - 1) for r in _merge((r.start, r.stop - 1) for r in ranges)))

    @classmethod
    def from_numbers(cls, numbers: Iterable[int]) -> SequenceSet:
        """The compact set of the given numbers: ``[1, 2, 3, 5]`` gives ``1:3,5``."""
        return cls.from_ranges(range(n, n + 1) for n in numbers)

    def uses_star(self) -> bool:
        return any(first is None or last is None for first, last in self.items)

    def exceeds(self, largest: int) -> bool:
        """Whether a number written explicitly is above ``largest``: for message sequence numbers
        the session answers BAD then; for UIDs such numbers are simply ignored (RFC 3501 §6.4.8)."""
        return any(b is not None and b > largest for pair in self.items for b in pair)

    def _pairs(self, largest: int) -> Iterator[tuple[int, int]]:
        for first, last in self.items:
            a = largest if first is None else first
            b = largest if last is None else last
            if a > b:
                a, b = b, a
            yield a, b

    def resolve(self, largest: int) -> tuple[range, ...]:
        """The numbers of the set that lie in ``1..largest`` as sorted, disjoint, non-adjacent
        ranges. A UID set ``559:*`` with largest UID 500 gives ``range(500, 501)``: ``*`` is 500,
        so the range is ``500:559`` (RFC 3501 §6.4.8)."""
        if len(self.items) == 1:  # most sets a client sends: ``n``, ``n:m``, ``1:*``
            ((a, b),) = self._pairs(largest)
            a, b = max(a, 1), min(b, largest)
            return (range(a, b + 1),) if b >= a else ()
        return _merge((a, min(b, largest)) for a, b in self._pairs(largest))

    def iter_numbers(self, largest: int) -> Iterator[int]:
        """The numbers of :meth:`resolve`, ascending and without duplicates."""
        for r in self.resolve(largest):
            yield from r

    def count(self, largest: int) -> int:
        return sum(len(r) for r in self.resolve(largest))

    def contains(self, number: int, largest: int) -> bool:
        """Whether ``number`` is in the set resolved against ``largest`` (without resolving it)."""
        if not 1 <= number <= largest:
            return False
        return any(a <= number <= b for a, b in self._pairs(largest))

    def __str__(self) -> str:
        return ",".join(
            _format_bound(first) if first == last else f"{_format_bound(first)}:{_format_bound(last)}"
            for first, last in self.items
        )


def _merge(pairs: Iterable[tuple[int, int]]) -> tuple[range, ...]:
    """Sorted, merged ranges of the inclusive pairs, ignoring empty ones and numbers below 1."""
    ordered = sorted((max(a, 1), b) for a, b in pairs if b >= max(a, 1))
    merged: list[list[int]] = []
    for a, b in ordered:
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return tuple(range(a, b + 1) for a, b in merged)
