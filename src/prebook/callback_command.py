"""``prebook callback``: make the signed call that QStash would make for a prebooking.

For trying the gateway without QStash, and for re-triggering a prebooking by hand. The
body and signature are built from the same settings the gateway checks
(``PREBOOK_TOKEN_SECRET``, ``PREBOOK_QSTASH_CURRENT_SIGNING_KEY``, ``PREBOOK_PUBLIC_URL``).
"""

from __future__ import annotations

import asyncio
import json
import shlex
import uuid

import httpx
import typer

from prebook_common.db import engine_scope, session_factory
from prebook_common.models import Prebooking
from prebook_common.settings import get_settings
from prebook_common.signatures import sign
from prebook_common.token import make_token


def callback(
    prebooking_id: uuid.UUID = typer.Argument(..., help="Id of a stored prebooking."),
    send: bool = typer.Option(False, "--send", help="POST it to the gateway instead of printing a curl command."),
) -> None:
    """Sign the QStash callback for a prebooking; print it as curl, or --send it."""
    settings = get_settings()
    prebooking = asyncio.run(_load(settings.database_url, prebooking_id))
    if prebooking is None:
        typer.echo(f"prebooking {prebooking_id} not found in {settings.database_url.split('://')[0]} database at PREBOOK_DATABASE_URL", err=True)
        raise typer.Exit(1)

    body = json.dumps(
        {
            "prebookingId": str(prebooking.id),
            "executeAt": prebooking.execute_at_ms,
            "boxSubdomain": prebooking.box_subdomain,
            "boxAimharderId": prebooking.box_aimharder_id,
            "securityToken": make_token(settings.token_secret.get_secret_value(), prebooking.id, prebooking.execute_at_ms),
        },
        separators=(",", ":"),
    )
    signature = sign(body.encode(), settings.callback_url, settings.qstash_current_signing_key.get_secret_value())
    headers = {
        "Content-Type": "application/json",
        "Upstash-Signature": signature,
        "Upstash-Message-Id": f"manual_{uuid.uuid4().hex}",
        "Upstash-Retried": "0",
    }

    if not send:
        parts = ["curl", "-sS", "-X", "POST", settings.callback_url]
        for name, value in headers.items():
            parts += ["-H", f"{name}: {value}"]
        parts += ["--data", body]
        typer.echo(shlex.join(parts))
        return

    try:
        response = httpx.post(settings.callback_url, content=body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        typer.echo(f"gateway at {settings.callback_url} is unreachable ({exc}): is `prebook gateway` running?", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{response.status_code} {response.text}")
    if response.status_code >= 300:
        raise typer.Exit(1)


async def _load(database_url: str, prebooking_id: uuid.UUID) -> Prebooking | None:
    async with engine_scope(database_url) as engine:
        async with session_factory(engine)() as session:
            return await session.get(Prebooking, prebooking_id)
