"""Schema migrations with Alembic, runnable from code and from ``prebook migrate``.

Every service may call ``upgrade`` at start-up. On Postgres an advisory lock makes
concurrent upgrades wait for each other, so replicas that start together do not race.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# An arbitrary constant that names Prebook's migration lock among advisory locks.
ADVISORY_LOCK_ID = 0x70726562


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the database behind ``engine`` to ``revision``."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": ADVISORY_LOCK_ID})
        before = await connection.run_sync(_current_revision)
        await connection.run_sync(_run_upgrade, revision)
        after = await connection.run_sync(_current_revision)

    if before != after:
        logger.info("database schema upgraded from %s to %s", before or "empty", after)
    else:
        logger.debug("database schema already at %s", after)


def _run_upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
