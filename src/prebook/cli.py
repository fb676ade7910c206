"""``prebook``: one command line for every Prebook service.

Each service command runs one service in the foreground, configured from ``PREBOOK_*``
environment variables (see ``.env.example``), until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio

import typer

from prebook import callback_command, client, keys, sessions_command, up

app = typer.Typer(
    help="Prebook books AimHarder classes at the instant their booking window opens.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def gateway() -> None:
    """Run the gateway: REST API and QStash callback (HTTP)."""
    from prebook_gateway.main import serve

    serve()


@app.command()
def executor() -> None:
    """Run the executor: parks prebookings and fires them at their target instant."""
    from prebook_executor.main import serve

    serve()


@app.command()
def scheduler() -> None:
    """Run the scheduler: wakes the gateway before each opening."""
    from prebook_scheduler.main import serve

    serve()


@app.command()
def sim(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="TCP port to listen on."),
) -> None:
    """Run the AimHarder simulator for tests and demos (plain HTTP)."""
    from prebook_common.log import setup_logging
    from prebook_simulator import serve

    setup_logging("INFO")
    serve(host, port)


@app.command()
def migrate() -> None:
    """Upgrade the database at PREBOOK_DATABASE_URL to the latest schema."""
    from prebook_common.db import engine_scope
    from prebook_common.log import setup_logging
    from prebook_common.migrate import upgrade
    from prebook_common.settings import get_settings

    settings = get_settings()
    setup_logging(settings.log_level)

    async def run() -> None:
        async with engine_scope(settings.database_url) as engine:
            await upgrade(engine)

    asyncio.run(run())


app.command()(callback_command.callback)
app.add_typer(sessions_command.app, name="sessions")
app.add_typer(client.app)
app.add_typer(keys.app, name="keys")
app.add_typer(up.app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
