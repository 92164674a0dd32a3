"""Database access: engines, sessions, the declarative base and group commit."""

from openmss.db.base import Base, UTCDateTime, utcnow
from openmss.db.engine import Database

__all__ = ["Base", "Database", "UTCDateTime", "utcnow"]
