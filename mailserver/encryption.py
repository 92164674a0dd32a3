"""Encryption at rest on delivery: every copy filed in a mailbox is encrypted to its owner's
current OpenPGP key (RFC 3156 PGP/MIME with protected headers), unless it arrived already
end-to-end encrypted, in which case it is stored exactly as it came.

Runs inside the delivery transaction (the storage worker process): only public keys are
needed here, never a password.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from mailserver.message.pgpmime import encrypt_message, is_encrypted
from openmss.crypto import pgp


class NoKey(RuntimeError):
    """An account has no key to encrypt to: the message is refused (temporarily), never stored
    in clear."""


@dataclass(frozen=True)
class OwnerKey:
    fingerprint: str
    public: bytes
    mode: str  # "server": the server holds the secret key and decrypts for unlocked sessions


@dataclass(frozen=True)
class Copy:
    body: bytes
    size: int  # what a reader is served: the decrypted size when decrypt_on_read
    decrypt_on_read: bool


class AtRest:
    def __init__(self, *, enabled: bool = True, cache_size: int = 4096) -> None:
        self.enabled = enabled
        self._certs: OrderedDict[str, pgp.Cert] = OrderedDict()
        self._cache_size = cache_size

    def _cert(self, key: OwnerKey) -> pgp.Cert:
        cert = self._certs.get(key.fingerprint)
        if cert is None:
            cert = pgp.load_cert(key.public)
            self._certs[key.fingerprint] = cert
            if len(self._certs) > self._cache_size:
                self._certs.popitem(last=False)
        else:
            self._certs.move_to_end(key.fingerprint)
        return cert

    def copies(self, content: bytes, owners: dict[int, OwnerKey | None]) -> dict[int, Copy]:
        """One stored copy per owner account id (copies for the same owner are shared)."""
        if not self.enabled or is_encrypted(content):
            same = Copy(content, len(content), False)
            return dict.fromkeys(owners, same)
        result: dict[int, Copy] = {}
        by_key: dict[str, Copy] = {}
        for account_id, key in owners.items():
            if key is None:
                raise NoKey(f"account {account_id} has no key to encrypt to")
            copy = by_key.get(key.fingerprint)
            if copy is None:
                server_held = key.mode == "server"
                body = encrypt_message(content, [self._cert(key)], mark_protected=not server_held)
                copy = Copy(body, len(content) if server_held else len(body), server_held)
                by_key[key.fingerprint] = copy
            result[account_id] = copy
        return result
