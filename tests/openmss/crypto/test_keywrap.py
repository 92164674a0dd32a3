"""Key wrapping: argon2id-derived keys and AES-256-GCM seals."""

from __future__ import annotations

import pytest

from openmss.crypto import keywrap

CHEAP = keywrap.KdfParams(memory_kib=1024, time_cost=1, parallelism=1)


def test_seal_opens_only_with_the_same_password_and_purpose() -> None:
    kdf = CHEAP.new_kdf()
    assert kdf.startswith("argon2id$v=19$m=1024,t=1,p=1$")
    key = keywrap.derive_key("correct horse", kdf)
    sealed = keywrap.seal(key, b"data key", b"dk:1")
    assert b"data key" not in sealed
    assert keywrap.unseal(keywrap.derive_key("correct horse", kdf), sealed, b"dk:1") == b"data key"
    with pytest.raises(keywrap.WrongKey):
        keywrap.unseal(keywrap.derive_key("wrong horse", kdf), sealed, b"dk:1")
    with pytest.raises(keywrap.WrongKey):  # copied into another account's row: does not open
        keywrap.unseal(key, sealed, b"dk:2")
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(keywrap.WrongKey):
        keywrap.unseal(key, bytes(tampered), b"dk:1")


def test_each_kdf_has_its_own_salt() -> None:
    first, second = CHEAP.new_kdf(), CHEAP.new_kdf()
    assert first != second
    assert keywrap.derive_key("pw", first) != keywrap.derive_key("pw", second)


@pytest.mark.parametrize("kdf", ["scrypt$x", "argon2id$v=18$m=1,t=1,p=1$AAAA", "argon2id$v=19$garbage$AAAA"])
def test_unknown_derivations_are_refused(kdf: str) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        keywrap.derive_key("pw", kdf)
