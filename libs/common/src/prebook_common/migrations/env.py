"""Alembic environment: runs on the connection that ``prebook_common.migrate`` passes in."""

from alembic import context
from sqlmodel import SQLModel

import prebook_common.models  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through prebook_common.migrate.upgrade or `prebook migrate`")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
