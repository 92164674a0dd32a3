"""Alembic environment: runs on a connection handed over by ``openmss.db.migrate``."""

from __future__ import annotations

from alembic import context

from openmss.db.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with 'openmss db upgrade'")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
