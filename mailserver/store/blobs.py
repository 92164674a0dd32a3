"""Message bodies as opaque bytes behind a small, streamed interface.

Callers hand bodies over as an iterable of chunks and read them back as an async iterator of
chunks, so a 25 MB message is never joined into one more buffer on its way to or from the
database. Every operation runs inside the caller's transaction: a body and the rows that refer
to it are committed together or not at all. Encryption at rest wraps this interface.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Protocol

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailserver.store.tables import Blob, BlobChunk

CHUNK_SIZE = 1 << 20


class BlobNotFound(LookupError):
    pass


class BlobStore(Protocol):
    async def put(self, session: AsyncSession, chunks: Iterable[bytes | memoryview]) -> int:
        """Store the concatenation of ``chunks``; return the new blob's id."""

    def get(self, session: AsyncSession, blob_id: int) -> AsyncIterator[bytes]:
        """Stream the blob back, chunk by chunk."""

    async def delete(self, session: AsyncSession, blob_id: int) -> None: ...


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

    async def put(self, session: AsyncSession, chunks: Iterable[bytes | memoryview]) -> int:
        blob = Blob(size=0, chunk_count=0)
        session.add(blob)
        await session.flush()
        size = 0
        seq = 0
        for piece in rechunk(chunks, self.chunk_size):
            await session.execute(insert(BlobChunk).values(blob_id=blob.id, seq=seq, data=piece))
            size += len(piece)
            seq += 1
        blob.size = size
        blob.chunk_count = seq
        await session.flush()
        return blob.id

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

    async def delete(self, session: AsyncSession, blob_id: int) -> None:
        await session.execute(delete(BlobChunk).where(BlobChunk.blob_id == blob_id))
        await session.execute(delete(Blob).where(Blob.id == blob_id))


async def read_all(blobs: BlobStore, session: AsyncSession, blob_id: int) -> bytes:
    """The whole blob in memory: for tests and small messages only."""
    return b"".join([chunk async for chunk in blobs.get(session, blob_id)])
