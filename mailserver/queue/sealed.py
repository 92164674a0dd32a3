"""Bodies of queued messages, sealed with the queue key (AES-256-GCM, one seal per chunk).

Wraps the ordinary blob store: callers of the queue see plaintext chunks, the database only
ever holds sealed ones. Each chunk's associated data is its position, so chunks cannot be
reordered or truncated unnoticed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from mailserver.store.blobs import DatabaseBlobStore, rechunk
from openmss.crypto.keywrap import seal, unseal

_OVERHEAD = 1 + 12 + 16  # version, nonce, tag (openmss.crypto.keywrap)


def _aad(seq: int, last: bool) -> bytes:
    return b"openmss-queue:%d:%d" % (seq, last)


class SealedBlobStore:
    def __init__(self, inner: DatabaseBlobStore, key: bytes) -> None:
        self._inner = inner
        self._key = key
        self._piece = inner.chunk_size - _OVERHEAD

    def _seal(self, chunks: Sequence[bytes | memoryview]) -> list[bytes]:
        pieces = list(rechunk(chunks, self._piece)) or [b""]
        return [seal(self._key, piece, _aad(seq, seq == len(pieces) - 1)) for seq, piece in enumerate(pieces)]

    def put_many(self, session: Session, bodies: Sequence[Sequence[bytes | memoryview]]) -> list[int]:
        return self._inner.put_many(session, [self._seal(chunks) for chunks in bodies])

    async def get(self, session: AsyncSession, blob_id: int) -> AsyncIterator[bytes]:
        pending: bytes | None = None
        seq = 0
        async for chunk in self._inner.get(session, blob_id):
            if pending is not None:
                yield unseal(self._key, pending, _aad(seq, False))
                seq += 1
            pending = chunk
        if pending is not None:
            yield unseal(self._key, pending, _aad(seq, True))

    def delete(self, session: Session, blob_id: int) -> None:
        self._inner.delete(session, blob_id)
