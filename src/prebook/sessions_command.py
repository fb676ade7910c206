"""``prebook sessions``: operator commands on stored AimHarder sessions.

``prebook sessions reencrypt`` talks to the database at ``PREBOOK_DATABASE_URL``
directly and re-encrypts every stored cookie set, token and password with the first
key in ``PREBOOK_SESSION_ENCRYPTION_KEYS``. docs/sessions.md describes key rotation.
"""

from __future__ import annotations

import asyncio

import typer

from prebook_common.aimharder_sessions import ReencryptReport, reencrypt_sessions
from prebook_common.crypto import DecryptionError, SecretBox
from prebook_common.db import engine_scope
from prebook_common.errors import ConfigurationError
from prebook_common.log import setup_logging
from prebook_common.migrate import upgrade
from prebook_common.settings import get_settings

app = typer.Typer(help="Manage stored AimHarder sessions.", no_args_is_help=True)


@app.command()
def reencrypt() -> None:
    """Re-encrypt every stored session secret with the first key of PREBOOK_SESSION_ENCRYPTION_KEYS."""
    settings = get_settings()
    setup_logging(settings.log_level)
    try:
        secret_box = SecretBox(settings.session_encryption_keys.get_secret_value())
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    try:
        report = asyncio.run(_reencrypt(settings.database_url, secret_box))
    except DecryptionError as exc:
        typer.echo(f"error: {exc}. Nothing after the failing session was re-encrypted", err=True)
        raise typer.Exit(1) from None
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None

    typer.echo(
        f"re-encrypted {report.secrets} secrets of {report.sessions} sessions with the first key "
        "of PREBOOK_SESSION_ENCRYPTION_KEYS. Remove the old keys once every service runs with the new key first."
    )


async def _reencrypt(database_url: str, secret_box: SecretBox) -> ReencryptReport:
    async with engine_scope(database_url) as engine:
        await upgrade(engine)
        return await reencrypt_sessions(engine, secret_box)
