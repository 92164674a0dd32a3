"""Tests for mailserver.imap.mutf7: modified UTF-7 mailbox names (RFC 3501 §5.1.3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailserver.imap.mutf7 import MUTF7Error, decode, encode


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("INBOX", "INBOX"),
        ("", ""),
        ("a&b", "a&-b"),
        ("&", "&-"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("Éléments envoyés", "&AMk-l&AOk-ments envoy&AOk-s"),
        # The example of RFC 3501 §5.1.3.
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("😀", "&2D3eAA-"),  # outside the BMP: a surrogate pair
        ("tab\there", "tab&AAk-here"),
    ],
)
def test_known_encodings(name: str, encoded: str) -> None:
    assert encode(name) == encoded
    assert decode(encoded) == name
    assert decode(encoded.encode("ascii")) == name


@pytest.mark.parametrize(
    "text",
    [
        "&U,BTFw-&ZeVnLIqe-",  # RFC 3501 §5.1.3: two adjacent shifts are not permitted
        "&Jjo!",  # unterminated
        "&",
        "a&Jjo",
        "&AGE-",  # encodes "a", which must stand for itself
        "&ZeVnLIqe",  # no closing "-"
        "&ZeVnLIq-",  # leftover bits not zero / truncated code unit
        "&A-",  # one base64 character is never whole octets
        "&AAA",
        "&2D0-",  # a lone high surrogate
        "&3gA-",  # a lone low surrogate
        "&U/BTFw-",  # "/" is "," in modified BASE64
        "&U=-",
        "caf\xe9",  # not US-ASCII
        "new\nline",
    ],
)
def test_invalid(text: str) -> None:
    with pytest.raises(MUTF7Error):
        decode(text)


def test_invalid_bytes() -> None:
    with pytest.raises(MUTF7Error):
        decode("café".encode())


def test_lone_surrogate_cannot_be_encoded() -> None:
    with pytest.raises(MUTF7Error):
        encode("a\ud800b")


names = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)


@given(names)
def test_round_trip(name: str) -> None:
    encoded = encode(name)
    assert encoded.isascii() and all(" " <= char <= "~" for char in encoded)
    assert decode(encoded) == name


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30))
def test_decode_is_canonical(text: str) -> None:
    # Whatever decode accepts is the one encoding of its result.
    try:
        name = decode(text)
    except MUTF7Error:
        return
    assert encode(name) == text
