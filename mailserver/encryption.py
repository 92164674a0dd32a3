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

    def copies(
        self, content: bytes, owners: dict[int, OwnerKey | None], *, sender: int | None = None
    ) -> dict[int, Copy]:
        """One stored copy per owner account id (copies for the same key are shared).

        The sender's Sent copy and the first recipient's copy are one ciphertext encrypted to
        both keys (when both keys are of the same kind): each of the two may read that message
        anyway, and the key id it reveals to each is the other party's, whom they know. Other
        recipients get a copy of their own, so that no one learns who else (Bcc) received it.
        """
        if not self.enabled or is_encrypted(content):
            same = Copy(content, len(content), False)
            return dict.fromkeys(owners, same)
        for account_id, key in owners.items():
            if key is None:
                raise NoKey(f"account {account_id} has no key to encrypt to")
        keys = {account_id: key for account_id, key in owners.items() if key is not None}
        groups: list[list[OwnerKey]] = []
        group_of: dict[str, int] = {}  # fingerprint -> index in groups
        sender_key = keys.get(sender) if sender is not None else None
        for account_id, key in keys.items():
            if key.fingerprint in group_of:
                continue
            if (
                sender_key is not None
                and account_id != sender
                and sender_key.fingerprint not in group_of
                and key.mode == sender_key.mode
            ):
                group_of[key.fingerprint] = group_of[sender_key.fingerprint] = len(groups)
                groups.append([key, sender_key])
                continue
            if account_id == sender and key.fingerprint not in group_of:
                # Wait: the sender pairs with the first recipient, if there is one.
                if any(k.mode == key.mode and a != sender for a, k in keys.items()):
                    continue
            group_of[key.fingerprint] = len(groups)
            groups.append([key])
        if sender_key is not None and sender_key.fingerprint not in group_of:
            group_of[sender_key.fingerprint] = len(groups)
            groups.append([sender_key])
        made: list[Copy] = []
        for group in groups:
            server_held = group[0].mode == "server"
            body = encrypt_message(content, [self._cert(k) for k in group], mark_protected=not server_held)
            made.append(Copy(body, len(content) if server_held else len(body), server_held))
        return {account_id: made[group_of[key.fingerprint]] for account_id, key in keys.items()}
