"""Key wrapping: a secret sealed with AES-256-GCM under a key derived from a password.

The derivation is argon2id (RFC 9106) through argon2-cffi's low-level API; the sealing is
AES-256-GCM from ``cryptography``. A wrapped value records its own parameters, so that
parameters can be raised later without breaking what is stored:

    kdf    = "argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt, base64>"
    sealed = version (1 byte) || nonce (12 bytes) || ciphertext || tag (16 bytes)

The associated data binds a sealed value to its purpose and owner (e.g. ``b"dk:42"``), so a
value copied into another row does not open.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
_VERSION = 1
_NONCE = 12


class WrongKey(ValueError):
    """The key (or password) does not open this sealed value, or the value was altered."""


@dataclass(frozen=True)
class KdfParams:
    """argon2id cost: defaults follow RFC 9106's second recommended option (64 MiB, t=3, p=4)."""

    memory_kib: int = 65536
    time_cost: int = 3
    parallelism: int = 4

    def new_kdf(self) -> str:
        salt = base64.b64encode(os.urandom(16)).decode().rstrip("=")
        return f"argon2id$v=19$m={self.memory_kib},t={self.time_cost},p={self.parallelism}${salt}"


def derive_key(password: str, kdf: str) -> bytes:
    """The 32-byte key that ``password`` gives under the parameters recorded in ``kdf``."""
    try:
        name, version, params, salt_b64 = kdf.split("$")
        if name != "argon2id" or version != "v=19":
            raise ValueError(name)
        values = dict(item.split("=", 1) for item in params.split(","))
        salt = base64.b64decode(salt_b64 + "=" * (-len(salt_b64) % 4))
        memory, passes, lanes = int(values["m"]), int(values["t"]), int(values["p"])
    except (ValueError, KeyError) as exc:
        raise ValueError(f"unsupported key derivation: {kdf.split('$')[0]}") from exc
    return hash_secret_raw(
        password.encode(),
        salt,
        time_cost=passes,
        memory_cost=memory,
        parallelism=lanes,
        hash_len=KEY_BYTES,
        type=Type.ID,
    )


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    return seal_with(AESGCM(key), plaintext, aad)


def unseal(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    return unseal_with(AESGCM(key), sealed, aad)


def seal_with(aead: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    """``seal`` with a ready AES-GCM context (for many values under one key)."""
    nonce = os.urandom(_NONCE)
    return bytes([_VERSION]) + nonce + aead.encrypt(nonce, plaintext, aad)


def unseal_with(aead: AESGCM, sealed: bytes, aad: bytes) -> bytes:
    if len(sealed) < 1 + _NONCE + 16 or sealed[0] != _VERSION:
        raise WrongKey("not a sealed value of a known version")
    try:
        return aead.decrypt(sealed[1 : 1 + _NONCE], sealed[1 + _NONCE :], aad)
    except InvalidTag:
        raise WrongKey("wrong key, or the sealed value was altered") from None


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)
