"""The queue key: a symmetric key, kept out of the database, that encrypts messages waiting
in the outbound queue (they must be readable by the server without any user's password, so
they cannot be encrypted to a user's key).

Taken from ``OPENMSS_QUEUE_KEY`` (32 bytes, base64) when set, else from a key file created
on first start with mode 0600 in a 0700 directory. With several instances, every instance
must get the same key (the variable, or the same file from a secret store).
"""

from __future__ import annotations

import base64
import logging
import os
import stat
from pathlib import Path

from openmss.crypto.keywrap import KEY_BYTES, new_key

log = logging.getLogger(__name__)


class QueueKeyError(ValueError):
    pass


def _decode(text: str, origin: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise QueueKeyError(f"{origin}: not base64") from None
    if len(key) != KEY_BYTES:
        raise QueueKeyError(f"{origin}: expected {KEY_BYTES} bytes, got {len(key)}")
    return key


def load_queue_key(value: str, path: Path) -> bytes:
    """The queue key from ``value`` (base64) if given, else from ``path`` (created if missing)."""
    if value:
        return _decode(value, "queue key")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, base64.b64encode(new_key()) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        log.info("generated the queue key", extra={"path": str(path)})
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the queue key file is readable by others: chmod 600", extra={"path": str(path)})
    return _decode(path.read_text(), str(path))
