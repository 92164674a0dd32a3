"""Re-chunking of message bodies: slices, one output chunk copied at a time."""

from hypothesis import given
from hypothesis import strategies as st

from mailserver.store.blobs import rechunk


def test_rechunk_examples():
    assert list(rechunk([b"abc", memoryview(b"defghij")], 4)) == [b"abcd", b"efgh", b"ij"]
    assert list(rechunk([b"", memoryview(b"")], 4)) == []
    assert list(rechunk([b"x" * 8], 4)) == [b"xxxx", b"xxxx"]


@given(st.lists(st.binary(max_size=50), max_size=10), st.integers(min_value=1, max_value=17))
def test_rechunk_keeps_every_byte_in_order(parts, size):
    out = list(rechunk(parts, size))
    assert b"".join(out) == b"".join(parts)
    assert all(len(c) == size for c in out[:-1]) and all(0 < len(c) <= size for c in out)
