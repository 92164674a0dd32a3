"""Reading messages for an unlocked session.

The store hands out what it holds; a ``MessageReader`` is what an authenticated session
(IMAP, the webmail, the account API) reads through: it holds the session's unlocked keys in
memory and serves copies the server encrypted to a key it holds (``decrypt_on_read``) as the
original message. Nothing decrypted is ever written anywhere. A session that did not unlock
has no reader.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mailserver.message.pgpmime import PgpMimeError, decrypt_message
from mailserver.store import headerindex
from mailserver.store.mailstore import MailStore, StoredMessage
from openmss.keyring.store import KeyChain


class UnreadableMessage(RuntimeError):
    """A copy the server encrypted for this account does not open with the account's keys."""


class MessageReader:
    def __init__(self, store: MailStore, chain: KeyChain) -> None:
        self._store = store
        self._chain = chain
        self._index = headerindex.Sealer(chain.dk)

    @property
    def account_id(self) -> int:
        return self._chain.account_id

    async def read(self, session: AsyncSession, message: StoredMessage) -> bytes:
        return self.open(message, await self._store.read(session, message))

    def open(self, message: StoredMessage, stored: bytes) -> bytes:
        """What the owner reads of ``stored``, the bytes the store holds for ``message``."""
        if not message.decrypt_on_read:
            return stored  # kept as it came (already end-to-end encrypted), or an own-key copy
        try:
            return decrypt_message(stored, self._chain.decryptors())
        except PgpMimeError as exc:
            raise UnreadableMessage(f"message {message.mailbox_id}/{message.uid}: {exc}") from None

    def seal_header(self, message_id: int, blob_id: int, header: bytes) -> bytes:
        """A message's header, sealed for the header index (see ``headerindex``)."""
        return self._index.seal(message_id, blob_id, header)

    def open_header(self, message_id: int, blob_id: int, sealed: bytes) -> bytes | None:
        return self._index.unseal(message_id, blob_id, sealed)
