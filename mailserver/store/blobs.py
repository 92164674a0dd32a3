"""Message bodies as opaque bytes behind a small, streamed interface.

Callers hand bodies over as sequences of chunks and read them back as an async iterator of
chunks, so a 25 MB message is never joined into one more buffer on its way to or from the
database. Writes run in the writer thread inside the caller's transaction (a synchronous
``Session``): a body and the rows that refer to it are committed together or not at all.
Reads run on the event loop (``AsyncSession``). Encryption at rest wraps this interface.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Protocol

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from mailserver.store.tables import Blob, BlobChunk
from openmss.db.base import random_id, table, utcnow
from openmss.db.driver import DriverStatement

CHUNK_SIZE = 1 << 20
# Chunk rows are sent to the database in groups of about this many bytes.
_FLUSH_BYTES = 8 << 20
# Statements built once, run by the driver (openmss.db.driver): they are on every delivery.
_INSERT_BLOB = DriverStatement(insert(table(Blob)).inline(), ("id", "size", "chunk_count", "created_at"))
_INSERT_CHUNK = DriverStatement(insert(table(BlobChunk)).inline(), ("blob_id", "seq", "data"))


class BlobNotFound(LookupError):
    pass


class BlobStore(Protocol):
    def put_many(self, session: Session, bodies: Sequence[Sequence[bytes | memoryview]]) -> list[int]:
        """Store several bodies (each a sequence of chunks); one new id per body, in order."""

    def get(self, session: AsyncSession, blob_id: int) -> AsyncIterator[bytes]:
        """Stream a body back, chunk by chunk."""

    def delete(self, session: Session, blob_id: int) -> None: ...


def rechunk(chunks: Iterable[bytes | memoryview], size: int) -> Iterable[bytes]:
    """Re-slice ``chunks`` into pieces of at most ``size`` bytes, copying one piece at a time."""
    pending: list[memoryview] = []
    pending_len = 0
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        while view:
            take = min(size - pending_len, len(view))
            pending.append(view[:take])
            pending_len += take
            view = view[take:]
            if pending_len == size:
                yield b"".join(pending)
                pending, pending_len = [], 0
    if pending_len:
        yield b"".join(pending)


class DatabaseBlobStore:
    """Bodies in the database, in chunks of ``chunk_size`` bytes.

    Keeping bodies in the database makes every instance stateless (all share PostgreSQL) and
    makes a message and its body one atomic commit.
    """

    def __init__(self, chunk_size: int = CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size

    def put(self, session: Session, chunks: Sequence[bytes | memoryview]) -> int:
        [blob_id] = self.put_many(session, [chunks])
        return blob_id

    def put_many(self, session: Session, bodies: Sequence[Sequence[bytes | memoryview]]) -> list[int]:
        # Whatever the number of bodies: one INSERT .. RETURNING for the blobs, then the chunk
        # rows in executemany groups of about 8 MiB.
        if not bodies:
            return []
        conn = session.connection()  # Core: the ORM's unit of work is not needed here
        ids = [random_id() for _ in bodies]
        now = utcnow()
        _INSERT_BLOB.executemany(
            conn,
            [
                (blob_id, size, (size + self.chunk_size - 1) // self.chunk_size, now)
                for blob_id, size in zip(ids, (sum(len(c) for c in chunks) for chunks in bodies), strict=True)
            ],
        )
        rows: list[tuple[int, int, bytes | memoryview]] = []
        pending = 0
        for blob_id, chunks in zip(ids, bodies, strict=True):
            for seq, piece in enumerate(rechunk(chunks, self.chunk_size)):
                rows.append((blob_id, seq, piece))
                pending += len(piece)
                if pending >= _FLUSH_BYTES:
                    _INSERT_CHUNK.executemany(conn, rows)
                    rows, pending = [], 0
        _INSERT_CHUNK.executemany(conn, rows)
        return ids

    async def get(self, session: AsyncSession, blob_id: int) -> AsyncIterator[bytes]:
        count = await session.scalar(select(Blob.chunk_count).where(Blob.id == blob_id))
        if count is None:
            raise BlobNotFound(blob_id)
        for seq in range(count):
            data = await session.scalar(
                select(BlobChunk.data).where(BlobChunk.blob_id == blob_id, BlobChunk.seq == seq)
            )
            if data is None:
                raise BlobNotFound(f"{blob_id}/{seq}")
            yield bytes(data)

    def delete(self, session: Session, blob_id: int) -> None:
        session.execute(delete(BlobChunk).where(BlobChunk.blob_id == blob_id))
        session.execute(delete(Blob).where(Blob.id == blob_id))
