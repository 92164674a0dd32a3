"""Every table of the application, imported so that ``Base.metadata`` knows them all."""

from mailserver.queue.tables import QueuedMessage, QueuedRecipient
from mailserver.store.tables import Account, Blob, BlobChunk, Mailbox, Message
from openmss.audit import AuditEvent
from openmss.db.base import Base

metadata = Base.metadata

__all__ = [
    "Account",
    "AuditEvent",
    "Blob",
    "BlobChunk",
    "Mailbox",
    "Message",
    "QueuedMessage",
    "QueuedRecipient",
    "metadata",
]
