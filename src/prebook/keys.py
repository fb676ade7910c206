"""``prebook keys create | list | revoke``: API keys, written straight to the database.

These are operator commands: they run where PREBOOK_DATABASE_URL points at Prebook's
database, with no gateway and no admin key involved. The schema is upgraded first,
as every service does at start-up.
"""

from __future__ import annotations

import asyncio
from uuid import UUID

import typer

app = typer.Typer(help="Create, list and revoke API keys in the database at PREBOOK_DATABASE_URL.", no_args_is_help=True)


def _run(coroutine):
    from prebook_common.log import setup_logging
    from prebook_common.settings import get_settings

    setup_logging(get_settings().log_level)
    return asyncio.run(coroutine)


async def _in_session(work):
    from prebook_common.db import engine_scope, session_factory
    from prebook_common.migrate import upgrade
    from prebook_common.settings import get_settings

    async with engine_scope(get_settings().database_url) as engine:
        await upgrade(engine)
        async with session_factory(engine)() as session:
            return await work(session)


def _email_or_exit(user: str) -> str:
    from prebook_gateway.keys import InvalidEmail, normalize_email

    try:
        return normalize_email(user)
    except InvalidEmail as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def create(
    user: str = typer.Option(..., help="Email of the key's user; the user is created when missing."),
    name: str | None = typer.Option(None, help="A label to tell keys apart, such as 'laptop'."),
) -> None:
    """Create an API key and print it once on stdout; it cannot be shown again."""
    from prebook_gateway.keys import ensure_user, issue_key

    email = _email_or_exit(user)

    async def work(session):
        _, created = await ensure_user(session, email)
        issued = await issue_key(session, email, name)
        await session.commit()
        return issued, created

    issued, created = _run(_in_session(work))
    if created:
        typer.echo(f"created user {email}", err=True)
    typer.echo(f"created API key {issued.row.id} for {email}; store it now, it is not shown again:", err=True)
    typer.echo(issued.key)


@app.command("list")
def list_keys(user: str = typer.Option(..., help="Email of the user whose keys are listed.")) -> None:
    """List a user's keys: id, display prefix, name, creation and revocation times."""
    from prebook_gateway.keys import list_keys as stored_keys

    email = _email_or_exit(user)

    async def work(session):
        return await stored_keys(session, email)

    for row in _run(_in_session(work)):
        revoked = f"revoked {row.revoked_at.isoformat()}" if row.revoked_at else "active"
        typer.echo(f"{row.id}  {row.prefix}...  {row.name or '-'}  created {row.created_at.isoformat()}  {revoked}")


@app.command()
def revoke(key_id: UUID = typer.Argument(..., help="Id of the key, as `prebook keys list` shows it.")) -> None:
    """Revoke an API key; requests with it get 401 from then on."""
    from prebook_gateway.keys import revoke_key

    async def work(session):
        row = await revoke_key(session, key_id)
        await session.commit()
        return row

    row = _run(_in_session(work))
    if row is None:
        typer.echo(f"error: API key {key_id} not found: list the keys with `prebook keys list --user EMAIL`", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked API key {key_id} of {row.user_email}")
