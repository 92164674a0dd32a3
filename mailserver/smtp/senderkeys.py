"""The current OpenPGP key of submitting accounts (for the Autocrypt header and server-side
signing), remembered for a few seconds so that a busy sender costs one query, not one per
message."""

from __future__ import annotations

import time

from openmss.db.engine import Database
from openmss.keyring.store import Keyring, PublishedKey


class SenderKeys:
    def __init__(self, db: Database, keyring: Keyring, ttl: float = 10.0, max_entries: int = 10_000) -> None:
        self._db = db
        self._keyring = keyring
        self._ttl = ttl
        self._max = max_entries
        self._entries: dict[int, tuple[PublishedKey | None, float]] = {}

    def forget(self, account_id: int) -> None:
        """The account's key or settings changed here: read them again next time (another
        instance notices within the TTL)."""
        self._entries.pop(account_id, None)

    async def get(self, account_id: int) -> PublishedKey | None:
        entry = self._entries.get(account_id)
        if entry is not None and entry[1] > time.monotonic():
            return entry[0]
        async with self._db.read() as session:
            key = await self._keyring.current_key(session, account_id)
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[account_id] = (key, time.monotonic() + self._ttl)
        return key
