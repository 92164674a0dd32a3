"""The sealed header index: each readable message's top-level header, sealed under a key only
its owner's unlocked session holds, so that SEARCH on header fields (FROM, SUBJECT, HEADER,
SENTON…) reads a few hundred bytes per message instead of decrypting the whole message.

Dovecot keeps such fields in its cache file; ours is a table (``MessageHeader``) of AES-256-GCM
sealed values under ``HKDF-SHA256(data key, "openmss header index v1")``, bound to the message
and its body (additional data: message id and blob id), so a value moved to another row or
another account's key does not open. Entries are written by sessions: at APPEND, and after a
message was decrypted for any read (the session queues them and writes them with its next
audit flush). Delivery cannot write them: it holds no key of the recipient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Select, bindparam, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from mailserver.message.headers import MessageFormatError, split_header
from mailserver.store.mailboxes import META_COLUMNS
from mailserver.store.tables import Message, MessageHeader
from openmss.crypto import keywrap

_INFO = b"openmss header index v1"
_MAX = 64 * 1024  # a header block longer than this is not indexed (searched the slow way)


def index_key(data_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(data_key)


def _aad(message_id: int, blob_id: int) -> bytes:
    return b"%d/%d" % (message_id, blob_id)


def header_block(message: bytes) -> bytes | None:
    """The top-level header of ``message`` (with the empty line that ends it), or None when it
    is too long to index."""
    try:
        head, _ = split_header(message, max_header_size=_MAX)
    except MessageFormatError:
        return None
    return bytes(head) if len(head) <= _MAX else None


class Sealer:
    """Seals and opens index entries with one account's index key (the AES-GCM context is made
    once: opening thousands of entries per search is the point)."""

    def __init__(self, data_key: bytes) -> None:
        self._aead = AESGCM(index_key(data_key))

    def seal(self, message_id: int, blob_id: int, header: bytes) -> bytes:
        return keywrap.seal_with(self._aead, header, _aad(message_id, blob_id))

    def unseal(self, message_id: int, blob_id: int, sealed: bytes) -> bytes | None:
        """The header, or None when the value does not open (altered, or another key's)."""
        try:
            return keywrap.unseal_with(self._aead, sealed, _aad(message_id, blob_id))
        except keywrap.WrongKey:
            return None


def save(session: Session, entries: Sequence[tuple[int, bytes]]) -> int:
    """Store (message id, sealed header) pairs for messages that still exist and have none;
    inside the caller's write transaction. Returns how many were written."""
    if not entries:
        return 0
    ids = sorted({message_id for message_id, _ in entries})
    live = set(session.scalars(select(Message.id).where(Message.id.in_(ids))))
    known = set(session.scalars(select(MessageHeader.message_id).where(MessageHeader.message_id.in_(ids))))
    rows: dict[int, bytes] = {}
    for message_id, sealed in entries:
        if message_id in live and message_id not in known:
            rows[message_id] = sealed
    if rows:
        conn = session.connection()
        # Two sessions of one account may index the same message at once (PostgreSQL runs
        # their transactions concurrently): the second insert gives way.
        dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        conn.execute(
            dialect_insert(MessageHeader).on_conflict_do_nothing(),
            [{"message_id": message_id, "sealed": sealed} for message_id, sealed in rows.items()],
        )
    return len(rows)


# The reads (``Reads`` statements): the sealed header, when there is one, of messages by UID
# range; with their metadata, or with only what opening the entry needs.
def _by_uid_range(*columns: Any) -> Select[Any]:
    return (
        select(*columns, MessageHeader.sealed)
        .outerjoin(MessageHeader, MessageHeader.message_id == Message.id)
        .where(
            Message.mailbox_id == bindparam("box"),
            Message.uid >= bindparam("lo"),
            Message.uid <= bindparam("hi"),
        )
        .order_by(Message.uid)
    )


HEADERS = _by_uid_range(Message.id, Message.uid, Message.blob_id)
METAS_WITH_HEADERS = _by_uid_range(*META_COLUMNS)
