"""A storage-worker factory for tests: one handler that records audit events."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from openmss import audit
from openmss.db.commit import BatchHandler
from openmss.db.engine import Database


class _Unpicklable(Exception):
    def __reduce__(self) -> Any:
        raise TypeError("this exception cannot travel")


def _audit(session: Session, actors: Sequence[str]) -> list[int]:
    for actor in actors:
        if actor == "poison":
            raise ValueError("poison payload")
        if actor == "unpicklable":
            raise _Unpicklable("stays in the worker")
        audit.record(session, actor=actor[:300], action="storage.test", size=len(actor))
    return [os.getpid() for _ in actors]


def handlers(config: dict[str, Any]) -> tuple[Database, dict[str, BatchHandler]]:
    return Database(config["url"]), {"audit": _audit}
