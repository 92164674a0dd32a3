"""Every table of the application, imported so that ``Base.metadata`` knows them all."""

# Imported for their models' registration: the messaging policy's conversations, the directory.
import directory.conversations
import directory.tables  # noqa: F401
from directory.key_tables import PublicKey
from mailserver.queue.tables import QueuedMessage, QueuedRecipient
from mailserver.store.tables import Account, Blob, BlobChunk, ExpungedMessage, Mailbox, Message
from openmss.audit import AuditEvent
from openmss.db.base import Base
from openmss.keyring.tables import AccountKey, AppPassword, KeyWrap

metadata = Base.metadata

__all__ = [
    "Account",
    "AccountKey",
    "AppPassword",
    "AuditEvent",
    "Blob",
    "BlobChunk",
    "ExpungedMessage",
    "KeyWrap",
    "Mailbox",
    "Message",
    "PublicKey",
    "QueuedMessage",
    "QueuedRecipient",
    "metadata",
]
