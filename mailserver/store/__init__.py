"""The mail store: accounts, mailboxes laid out for IMAP, messages, and opaque bodies."""

from mailserver.store.blobs import BlobStore, DatabaseBlobStore
from mailserver.store.mailstore import DEFAULT_MAILBOXES, MailStore, StoredMessage
from mailserver.store.tables import Account, Blob, Mailbox, Message

__all__ = [
    "DEFAULT_MAILBOXES",
    "Account",
    "Blob",
    "BlobStore",
    "DatabaseBlobStore",
    "MailStore",
    "Mailbox",
    "Message",
    "StoredMessage",
]
