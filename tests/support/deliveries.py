"""A ``Delivery`` on a test database, with what a test does not care about left plain."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from directory.trust import TrustListSource
from mailserver.delivery import Delivery
from mailserver.queue.store import QueueStore
from mailserver.store import DatabaseBlobStore, MailStore
from openmss.db.engine import Database


def make_delivery(db: Database, domain: str, **options: Any) -> Delivery:
    """Local delivery for ``domain``: no trust list, a day of queue lifetime, and ``options``
    (``at_rest``, ``record_conversations``…) as given."""
    return Delivery(
        db=db,
        local_domains=[domain],
        store=MailStore(DatabaseBlobStore()),
        queue=QueueStore(DatabaseBlobStore()),
        trust=TrustListSource.empty(),
        queue_lifetime=timedelta(days=1),
        **options,
    )
