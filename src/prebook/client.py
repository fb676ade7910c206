"""``prebook add | book | list | show | cancel | boxes | login``: the gateway's REST API.

The gateway's URL and the API key come from the environment or the config file (see
prebook/config.py). Times are shown in each box's time zone. ``--json`` prints the
gateway's JSON instead of a table. Exit status: 0 on success; 1 when the gateway
cannot be reached or rejects the request; 2 when no API key is configured or the
gateway rejects the key.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

import httpx
import typer
from rich.box import SIMPLE_HEAD
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from prebook.config import ClientConfig, ConfigError, config_path, load_config, read_config_file, write_config_file
from prebook.texts import text

app = typer.Typer()

REQUEST_TIMEOUT_S = 15.0
EXIT_FAILED = 1
EXIT_BAD_KEY = 2

console = Console()
errors = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print the gateway's JSON response instead of a table.")


def _fail(message: str, code: int) -> NoReturn:
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class Api:
    """A small client of the gateway that turns every failure into an exit with a message."""

    def __init__(self, config: ClientConfig, *, require_key: bool = True) -> None:
        if config.api_key is None and require_key:
            _fail(text("no_key", config=config_path()), EXIT_BAD_KEY)
        self.config = config
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._client = httpx.Client(base_url=config.api_url, headers=headers, timeout=REQUEST_TIMEOUT_S)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            reason = type(exc).__name__
            _fail(text("unreachable", url=self.config.api_url, reason=reason, config=config_path()), EXIT_FAILED)

        if response.status_code == 401:
            _fail(
                text(
                    "key_rejected",
                    url=self.config.api_url,
                    source=self.config.key_source,
                    detail=_detail(response),
                ),
                EXIT_BAD_KEY,
            )
        if response.status_code >= 400:
            _fail(text("request_failed", status=response.status_code, detail=_detail(response)), EXIT_FAILED)
        return response


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("error") or body)
    return str(body)


def _print_json(data: Any) -> None:
    console.print_json(json.dumps(data, ensure_ascii=False))


def _local_time(prebooking: dict[str, Any], *, zone_name: bool = False) -> str:
    """Return the firing instant as wall-clock time in the box's zone, such as ``2030-05-16 09:00 CEST``.

    Seconds and milliseconds are shown only when they are not zero. With ``zone_name``
    the IANA name follows in brackets.
    """
    zone = ZoneInfo(prebooking["timezone"])
    local = datetime.fromisoformat(prebooking["execute_at"]).astimezone(zone)
    if local.second == 0 and local.microsecond == 0:
        shown = f"{local:%Y-%m-%d %H:%M %Z}"
    else:
        shown = f"{local:%Y-%m-%d %H:%M:%S}.{local.microsecond // 1000:03d} {local:%Z}"
    return f"{shown} ({prebooking['timezone']})" if zone_name else shown


def _result(prebooking: dict[str, Any]) -> str:
    if prebooking.get("booking_id"):
        return str(prebooking["booking_id"])
    if prebooking.get("error_code"):
        return str(prebooking["error_code"])
    return ""


def _prebooking_table(items: list[dict[str, Any]]) -> Table:
    # Only the id, status and result fold, so a narrow terminal still shows whole times.
    # The result column appears only when some prebooking has one.
    with_result = any(_result(item) for item in items)
    table = Table(box=SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column(text("id"), overflow="fold", min_width=8)
    for name in ("box", "class", "day", "opens"):
        table.add_column(text(name), no_wrap=True)
    table.add_column(text("status"), overflow="fold", min_width=7)
    if with_result:
        table.add_column(text("result"), overflow="fold")

    for item in items:
        cells = [item["id"], item["box"], item["class_id"], item["class_day"], _local_time(item), item["status"]]
        if with_result:
            cells.append(_result(item))
        table.add_row(*cells)
    return table


def _detail_table(prebooking: dict[str, Any]) -> Table:
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row(text("opens"), _local_time(prebooking, zone_name=True))
    for name, value in prebooking.items():
        if name not in ("execute_at_local", "timezone"):
            table.add_row(name, "" if value is None else str(value))
    return table


def _class_fields(
    box: str, class_id: str, day: str, time: str | None, insist: bool, family_id: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"box": box, "class_id": class_id, "class_day": day, "insist": insist}
    if time is not None:
        body["class_time"] = time
    if family_id is not None:
        body["family_id"] = family_id
    return body


@app.command()
def add(
    box: str = typer.Option(..., help="Box subdomain, as in https://BOX.aimharder.com."),
    class_id: str = typer.Option(..., "--class-id", help="AimHarder's id of the class session."),
    day: str = typer.Option(..., help="Day of the class, YYYY-MM-DD."),
    time: str | None = typer.Option(None, help="Class start, HH:MM in the box's time zone; used to compute when booking opens."),
    at: str | None = typer.Option(None, "--at", help="Fire at this instant instead (ISO 8601 with offset, or epoch ms)."),
    insist: bool = typer.Option(False, help="Join the waitlist when the class is full."),
    family_id: str | None = typer.Option(None, "--family-id", help="AimHarder familyId of a family member."),
    as_json: bool = JsonOption,
) -> None:
    """Prebook a class: book it at the instant its booking window opens."""
    body = _class_fields(box, class_id, day, time, insist, family_id)
    if at is not None:
        body["execute_at"] = int(at) if at.isdigit() else at

    prebooking = Api(load_config()).request("POST", "/v1/prebookings", json=body).json()
    if as_json:
        _print_json(prebooking)
        return
    console.print(text("created", id=prebooking["id"], opens=_local_time(prebooking, zone_name=True)))
    console.print(_prebooking_table([prebooking]))


@app.command()
def book(
    box: str = typer.Option(..., help="Box subdomain, as in https://BOX.aimharder.com."),
    class_id: str = typer.Option(..., "--class-id", help="AimHarder's id of the class session."),
    day: str = typer.Option(..., help="Day of the class, YYYY-MM-DD."),
    time: str | None = typer.Option(None, help="Class start, HH:MM in the box's time zone (looked up when absent)."),
    insist: bool = typer.Option(False, help="Join the waitlist when the class is full."),
    family_id: str | None = typer.Option(None, "--family-id", help="AimHarder familyId of a family member."),
    as_json: bool = JsonOption,
) -> None:
    """Book a class now; when it is too early, prebook it for the opening instead."""
    body = _class_fields(box, class_id, day, time, insist, family_id)
    response = Api(load_config()).request("POST", "/v1/bookings", json=body)
    data = response.json()
    if as_json:
        _print_json(data)
        return
    if response.status_code == 202:
        console.print(text("prebooked", id=data["id"], opens=_local_time(data, zone_name=True)))
        console.print(_prebooking_table([data]))
        return
    console.print(text("booked_now", outcome=data["outcome"], book_state=data["book_state"]))
    if data.get("error_message"):
        console.print(data["error_message"], highlight=False)


@app.command("list")
def list_prebookings(
    status: str | None = typer.Option(None, help="Only this status: pending, scheduled, booked, cancelled, ..."),
    limit: int = typer.Option(20, min=1, max=100, help="Maximum number of prebookings shown."),
    offset: int = typer.Option(0, min=0, help="Number of prebookings skipped, for the next pages."),
    as_json: bool = JsonOption,
) -> None:
    """List your prebookings by firing time."""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if status is not None:
        params["status"] = status
    page = Api(load_config()).request("GET", "/v1/prebookings", params=params).json()
    if as_json:
        _print_json(page)
        return
    if not page["items"]:
        console.print(text("no_prebookings"))
        return
    console.print(_prebooking_table(page["items"]))
    console.print(text("page", shown=len(page["items"]), total=page["total"], offset=page["offset"]))


@app.command()
def show(prebooking_id: str = typer.Argument(..., help="The prebooking's id."), as_json: bool = JsonOption) -> None:
    """Show one prebooking with its outcome."""
    prebooking = Api(load_config()).request("GET", f"/v1/prebookings/{prebooking_id}").json()
    if as_json:
        _print_json(prebooking)
        return
    console.print(_detail_table(prebooking))


@app.command()
def cancel(prebooking_id: str = typer.Argument(..., help="The prebooking's id."), as_json: bool = JsonOption) -> None:
    """Cancel a prebooking that has not started firing."""
    prebooking = Api(load_config()).request("DELETE", f"/v1/prebookings/{prebooking_id}").json()
    if as_json:
        _print_json(prebooking)
        return
    console.print(text("cancelled", id=prebooking["id"]))


@app.command()
def boxes(as_json: bool = JsonOption) -> None:
    """List the configured boxes with their time zone and booking window."""
    listing = Api(load_config()).request("GET", "/v1/boxes").json()
    if as_json:
        _print_json(listing)
        return
    if not listing:
        console.print(text("no_boxes"))
        return

    table = Table()
    for name in ("subdomain", "aimharder_id", "timezone", "window"):
        table.add_column(text(name))
    for box in listing:
        if box["window_days"] is not None:
            window = text("days", count=box["window_days"])
        elif box["window_hours"] is not None:
            window = text("hours", count=box["window_hours"])
        else:
            window = "-"
        table.add_row(box["subdomain"], box["aimharder_id"], box["timezone"], window)
    console.print(table)


@app.command()
def login(
    key: str | None = typer.Option(None, help="The API key; prompted for (hidden) when absent."),
    url: str | None = typer.Option(None, help="The gateway's URL; defaults to the current one."),
    verify: bool = typer.Option(True, help="Check the key with GET /v1/me before saving it."),
) -> None:
    """Save the gateway URL and API key to the config file, readable only by you."""
    if key is None:
        key = typer.prompt("API key", hide_input=True)
    key = key.strip()
    current = load_config()
    api_url = (url or current.api_url).rstrip("/")
    config = ClientConfig(api_url=api_url, api_key=key, url_source="--url", key_source="--key")

    me: dict[str, Any] | None = None
    if verify:
        me = Api(config).request("GET", "/v1/me").json()

    path = config_path()
    try:
        values = {**read_config_file(path), "api_url": api_url, "api_key": key}
        write_config_file(path, values)
    except ConfigError as exc:
        _fail(str(exc), EXIT_FAILED)

    if me is not None and me.get("admin"):
        console.print(text("login_admin", path=path))
    else:
        console.print(text("login_saved", path=path, user=(me or {}).get("user_email", "?")))
