"""``prebook demo seed``: a class on the AimHarder simulator and a prebooking that books it.

The seed creates, on a running ``prebook sim``, a class that opens ``--opens-in``
seconds from now and a session for the demo user. It then stores that session
(encrypted, as ``PUT /v1/sessions`` would), the demo box and a pending prebooking in
the database at ``PREBOOK_DATABASE_URL``, and publishes ``prebooking.created``, the
event the scheduler schedules from. From there the real services take over: the
scheduler wakes the gateway ``PREBOOK_LEAD_S`` seconds early, the gateway publishes
the prepare event and the executor books the class on the simulator at its opening.

The rows are written directly rather than through the REST API, so the seed needs no
API key. ``prebook up --demo`` and the compose ``demo-seed`` service both run it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import date, timedelta

import httpx
import nats.errors
import typer
from faststream.nats import NatsBroker
from sqlalchemy.exc import SQLAlchemyError

from prebook_common.aimharder_sessions import SessionRepository
from prebook_common.crypto import SecretBox
from prebook_common.db import engine_scope, session_factory
from prebook_common.errors import PrebookError, PublishError
from prebook_common.events import PrebookingCreated
from prebook_common.migrate import upgrade
from prebook_common.models import (
    FINAL_STATUSES,
    Box,
    Prebooking,
    PrebookingStatus,
    ms_to_datetime,
    utcnow,
)
from prebook_common.settings import Settings
from prebook_common.streams import create_broker, ensure_stream, publish_event

logger = logging.getLogger(__name__)

__all__ = ["DemoError", "DemoPrebooking", "app", "describe_outcome", "seed", "wait_for_outcome"]

DEMO_USER = "demo@example.com"
DEMO_BOX = "demo"
DEMO_BOX_ID = "4242"
DEFAULT_OPENS_IN_S = 40.0
DEFAULT_SIM_URL = "http://127.0.0.1:8080"
# The demo class lies this many days ahead, as a class would whose 4-day booking window
# opens now. The simulator accepts the booking from ``opens_at_ms`` on, whatever the day.
CLASS_DAYS_AHEAD = 4
CLASS_CAPACITY = 10
# How long --wait keeps polling after the opening for a final status.
OUTCOME_GRACE_S = 60.0
POLL_INTERVAL_S = 0.5
HTTP_TIMEOUT_S = 10.0
NATS_CONNECT_TIMEOUT_S = 30.0

BOOKED_STATUSES = frozenset({PrebookingStatus.BOOKED, PrebookingStatus.WAITLISTED})


class DemoError(PrebookError):
    """The demo cannot be seeded. The message names the cause and the fix."""


@dataclass(frozen=True)
class DemoPrebooking:
    prebooking_id: uuid.UUID
    user_email: str
    class_id: int
    class_day: date
    execute_at_ms: int


def check_simulator_settings(settings: Settings, sim_url: str) -> None:
    """Raise DemoError unless the AimHarder URLs in ``settings`` point at the simulator.

    The executor and the gateway read the same settings, so otherwise the demo session
    and booking would go to the real AimHarder.
    """
    sim = sim_url.rstrip("/")
    box_url = settings.aimharder_box_url(DEMO_BOX)
    if box_url != sim:
        raise DemoError(
            f"the demo box {DEMO_BOX!r} resolves to {box_url}, so the demo booking would go to "
            f"AimHarder instead of the simulator at {sim}: set "
            f"PREBOOK_AIMHARDER_BOX_URLS='{{\"{DEMO_BOX}\": \"{sim}\"}}' (or PREBOOK_AIMHARDER_BASE_URL={sim}) "
            f"for the gateway, the executor and this command"
        )
    if settings.aimharder_login_url.rstrip("/") != sim:
        # The demo session is created fresh on the simulator, so no refresh or login is
        # due during the demo; a refresh much later would fail against the real AimHarder.
        logger.debug("demo: login URL %s is not the simulator; the demo session needs no login", settings.aimharder_login_url)


async def seed(
    settings: Settings,
    sim_url: str,
    *,
    opens_in_s: float = DEFAULT_OPENS_IN_S,
    user_email: str = DEMO_USER,
) -> DemoPrebooking:
    """Create the demo class, session and prebooking, and publish ``prebooking.created``.

    Raises DemoError when the settings do not point at the simulator, or when the
    simulator, the database or NATS cannot be reached.
    """
    check_simulator_settings(settings, sim_url)
    execute_at_ms = time.time_ns() // 1_000_000 + round(opens_in_s * 1000)
    class_day = date.today() + timedelta(days=CLASS_DAYS_AHEAD)
    # A new id per seed, so seeding again adds a class instead of replacing one.
    class_id = execute_at_ms % 1_000_000_000
    cookie = f"demo-{secrets.token_hex(16)}"

    token = await _create_simulator_class_and_session(
        sim_url, class_id=class_id, class_day=class_day, execute_at_ms=execute_at_ms,
        user_email=user_email, cookie=cookie,
    )  # fmt: skip
    prebooking_id = await _store_prebooking(
        settings, user_email=user_email, class_id=class_id, class_day=class_day,
        execute_at_ms=execute_at_ms, cookie=cookie, token=token,
    )  # fmt: skip
    await _publish_created(settings, prebooking_id, execute_at_ms)
    return DemoPrebooking(prebooking_id, user_email, class_id, class_day, execute_at_ms)


async def _create_simulator_class_and_session(
    sim_url: str, *, class_id: int, class_day: date, execute_at_ms: int, user_email: str, cookie: str
) -> str:
    """Create the class and the session on the simulator; return the session's token."""
    new_class = {
        "id": class_id,
        "day": class_day.strftime("%Y%m%d"),
        "capacity": CLASS_CAPACITY,
        "opens_at_ms": execute_at_ms,
        "name": "Prebook demo WOD",
    }
    # The simulator listens on this machine or the compose network, never behind a proxy.
    async with httpx.AsyncClient(base_url=sim_url, timeout=HTTP_TIMEOUT_S, trust_env=False) as sim:
        try:
            response = await sim.post("/_sim/classes", json=new_class)
            response.raise_for_status()
            response = await sim.post("/_sim/sessions", json={"user": user_email, "cookie": cookie})
            response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            raise DemoError(
                f"the simulator at {sim_url} rejected {exc.request.method} {exc.request.url.path} "
                f"with status {exc.response.status_code}: {exc.response.text}"
            ) from exc
        except httpx.HTTPError as exc:
            raise DemoError(
                f"the simulator at {sim_url} is not reachable ({type(exc).__name__}: {exc}): start it "
                f"with `prebook sim` or pass its address with --sim-url"
            ) from exc
    return response.json()["token"]


async def _store_prebooking(
    settings: Settings,
    *,
    user_email: str,
    class_id: int,
    class_day: date,
    execute_at_ms: int,
    cookie: str,
    token: str,
) -> uuid.UUID:
    secret_box = SecretBox(settings.session_encryption_keys.get_secret_value())
    now = utcnow()
    prebooking = Prebooking(
        user_email=user_email,
        box_subdomain=DEMO_BOX,
        box_aimharder_id=DEMO_BOX_ID,
        class_id=str(class_id),
        class_day=class_day,
        execute_at=ms_to_datetime(execute_at_ms),
        status=PrebookingStatus.PENDING,
        created_at=now,
        updated_at=now,
    )

    try:
        async with engine_scope(settings.database_url) as engine:
            await upgrade(engine)
            await SessionRepository(engine, secret_box).put(
                user_email, cookies={"amhrdrauth": cookie}, token=token, fingerprint=None
            )
            async with session_factory(engine)() as session:
                if await session.get(Box, DEMO_BOX) is None:
                    session.add(Box(subdomain=DEMO_BOX, aimharder_id=DEMO_BOX_ID, window_days=CLASS_DAYS_AHEAD))
                session.add(prebooking)
                await session.commit()
    except (SQLAlchemyError, OSError) as exc:
        raise DemoError(
            f"writing the demo prebooking to the database at PREBOOK_DATABASE_URL failed "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return prebooking.id


async def _publish_created(settings: Settings, prebooking_id: uuid.UUID, execute_at_ms: int) -> None:
    broker = create_broker(settings)
    try:
        await _connect(broker, settings)
        # The stream may not exist yet when the seed runs before every service has started.
        await ensure_stream(broker, settings)
        event = PrebookingCreated(prebooking_id=prebooking_id, execute_at_ms=execute_at_ms)
        # The message id the gateway gives this event, so JetStream drops a repeated publish.
        await publish_event(broker, settings, event, message_id=f"{prebooking_id}:created")
    except (PublishError, nats.errors.Error) as exc:
        raise DemoError(f"prebooking {prebooking_id} is stored but its created event was not published: {exc}") from exc
    finally:
        await broker.stop()


async def _connect(broker: NatsBroker, settings: Settings) -> None:
    # The broker retries its first connection forever, so the wait is bounded here.
    try:
        await asyncio.wait_for(broker.connect(), NATS_CONNECT_TIMEOUT_S)
    except asyncio.TimeoutError as exc:
        raise DemoError(
            f"NATS at PREBOOK_NATS_URL={settings.nats_url} did not accept a connection within "
            f"{NATS_CONNECT_TIMEOUT_S:.0f} s: start it, or fix the URL"
        ) from exc


async def wait_for_outcome(database_url: str, demo: DemoPrebooking, *, grace_s: float = OUTCOME_GRACE_S) -> Prebooking:
    """Poll the database until the demo prebooking has a final status, and return it.

    Raises DemoError when it has none ``grace_s`` seconds after the opening.
    """
    deadline_ms = demo.execute_at_ms + round(grace_s * 1000)
    async with engine_scope(database_url) as engine:
        sessions = session_factory(engine)
        while True:
            try:
                async with sessions() as session:
                    row = await session.get(Prebooking, demo.prebooking_id)
            except SQLAlchemyError as exc:
                raise DemoError(
                    f"reading demo prebooking {demo.prebooking_id} from the database failed ({type(exc).__name__}: {exc})"
                ) from exc
            if row is not None and row.status in FINAL_STATUSES:
                return row
            if time.time_ns() // 1_000_000 >= deadline_ms:
                status = row.status if row is not None else "deleted"
                raise DemoError(
                    f"demo prebooking {demo.prebooking_id} is still {status} {grace_s:.0f} s after its "
                    f"opening: check the scheduler's and the executor's logs"
                )
            await asyncio.sleep(POLL_INTERVAL_S)


def describe_outcome(row: Prebooking) -> str:
    """Describe a final prebooking in one line: status, booking id and timings."""
    parts = [f"demo prebooking {row.id} {row.status}"]
    if row.book_state is not None:
        parts.append(f"bookState {row.book_state}")
    if row.booking_id:
        parts.append(f"booking id {row.booking_id}")
    if row.fire_latency_us is not None:
        parts.append(f"fire latency {row.fire_latency_us} µs")
    if row.response_ms is not None:
        parts.append(f"AimHarder response {row.response_ms:.1f} ms")
    if row.error_code:
        parts.append(f"error {row.error_code}: {row.error_message}")
    return ", ".join(parts)


def describe_seed(demo: DemoPrebooking) -> str:
    opens_at = ms_to_datetime(demo.execute_at_ms).astimezone()
    return (
        f"demo prebooking {demo.prebooking_id}: class {demo.class_id} on {demo.class_day.isoformat()} "
        f"for {demo.user_email}, opens at {opens_at:%H:%M:%S} ({opens_at.tzname()})"
    )


app = typer.Typer(help="Try Prebook on the AimHarder simulator.", no_args_is_help=True)


@app.command("seed")
def seed_command(
    sim_url: str = typer.Option(DEFAULT_SIM_URL, help="Base URL of the running `prebook sim`."),
    opens_in: float = typer.Option(
        DEFAULT_OPENS_IN_S, min=1.0, help="Seconds from now until the demo class opens and the booking fires."
    ),
    user: str = typer.Option(DEMO_USER, help="E-mail of the demo user."),
    wait: bool = typer.Option(
        False, "--wait/--no-wait", help="Wait for the outcome and print it; exit with status 1 unless booked."
    ),
) -> None:
    """Create a class on the simulator and a prebooking that books it when it opens."""
    from prebook_common.log import setup_logging
    from prebook_common.settings import get_settings

    settings = get_settings()
    setup_logging("WARNING")
    # NOTE: the broker's disconnect callback logs "reconnecting" at WARNING even when the
    # seed closes the connection itself, so that logger shows errors only here.
    logging.getLogger("prebook_common.streams").setLevel(logging.ERROR)

    try:
        demo = asyncio.run(seed(settings, sim_url, opens_in_s=opens_in, user_email=user))
    except DemoError as exc:
        typer.echo(f"demo seed failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(describe_seed(demo))
    if not wait:
        return

    try:
        row = asyncio.run(wait_for_outcome(settings.database_url, demo))
    except DemoError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(describe_outcome(row))
    if row.status not in BOOKED_STATUSES:
        raise typer.Exit(1)
