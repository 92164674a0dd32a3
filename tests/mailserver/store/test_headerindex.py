"""The sealed header index: what it holds, and that it opens only for its message and key."""

from __future__ import annotations

import os

from mailserver.store import headerindex


def test_header_block_is_the_top_level_header_with_its_blank_line() -> None:
    message = b"From: a@x.test\r\nSubject: Compte rendu\r\n\r\nBody\r\nSubject: not a header\r\n"
    assert headerindex.header_block(message) == b"From: a@x.test\r\nSubject: Compte rendu\r\n\r\n"
    assert headerindex.header_block(b"Subject: no body") == b"Subject: no body"


def test_an_overlong_header_is_not_indexed() -> None:
    huge = b"X-Filler: " + b"a" * (70 * 1024) + b"\r\n\r\nbody"
    assert headerindex.header_block(huge) is None


def test_sealed_header_opens_only_for_its_message_blob_and_key() -> None:
    sealer = headerindex.Sealer(os.urandom(32))
    header = "Subject: Résultats SECRET\r\n\r\n".encode()
    sealed = sealer.seal(7, 70, header)
    assert b"SECRET" not in sealed
    assert sealer.unseal(7, 70, sealed) == header
    assert sealer.unseal(8, 70, sealed) is None  # moved to another message
    assert sealer.unseal(7, 71, sealed) is None  # another body
    assert headerindex.Sealer(os.urandom(32)).unseal(7, 70, sealed) is None  # another account
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert sealer.unseal(7, 70, tampered) is None


def test_index_key_depends_on_the_data_key() -> None:
    dk = os.urandom(32)
    assert headerindex.index_key(dk) == headerindex.index_key(dk)
    assert headerindex.index_key(dk) != dk
    assert headerindex.index_key(dk) != headerindex.index_key(os.urandom(32))
