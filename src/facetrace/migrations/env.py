"""Alembic environment: runs on the connection facetrace passes in (see ``db.migrate``)."""

from alembic import context

from facetrace.db import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - facetrace always passes a connection
    raise RuntimeError("facetrace migrations run through facetrace.db.migrate()")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
