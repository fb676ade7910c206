"""``POST /v1/bookings`` against the simulator: booked now, or prebooked when too early.

The box's zone is UTC here, so each expected opening is the class start minus the
window that the simulator's message states, with no daylight-saving change involved.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from api.conftest import EventReader, Gateway, GatewayFactory, bearer
from support.ports import free_port

USER = "ana@example.com"
BOX = "simbox"
BOX_ID = "4242"
COOKIE = "cookie-ana-0123456789"


def class_day() -> date:
    return datetime.now(UTC).date() + timedelta(days=10)


def at_nine(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 9, 0, tzinfo=UTC)


async def add_sim_class(sim: httpx.AsyncClient, day: date, *, open_now: bool, **fields: Any) -> None:
    opens_at_ms = None if open_now else int((datetime.now(UTC) + timedelta(days=9)).timestamp() * 1000)
    body = {
        "id": 7001,
        "day": day.strftime("%Y%m%d"),
        "capacity": 10,
        "opens_at_ms": opens_at_ms,
        "time": "09:00 - 10:00",
        **fields,
    }
    response = await sim.post("/_sim/classes", json=body)
    assert response.status_code == 201, response.text


async def ready_user(gateway: Gateway, sim: httpx.AsyncClient, *, sim_session: bool = True) -> str:
    """Configure the box, the user's key and stored session, and the simulator's session."""
    await gateway.put_box(BOX, aimharder_id=BOX_ID, timezone="UTC", window_days=4)
    key = await gateway.create_user_key(USER)
    await gateway.store_session(USER, {"amhrdrauth": COOKIE, "PHPSESSID": "php-1"})
    if sim_session:
        response = await sim.post("/_sim/sessions", json={"user": USER, "cookie": COOKIE, "expires_at_ms": None})
        assert response.status_code == 201, response.text
    return key


def booking_body(day: date, **fields: Any) -> dict[str, Any]:
    return {"box": BOX, "class_id": "7001", "class_day": day.isoformat(), **fields}


async def test_book_now_books_open_class(gateway: Gateway, sim: httpx.AsyncClient) -> None:
    key = await ready_user(gateway, sim)
    day = class_day()
    await add_sim_class(sim, day, open_now=True)

    response = await gateway.client.post("/v1/bookings", json=booking_body(day), headers=bearer(key))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["outcome"] == "booked"
    assert body["book_state"] == 1
    assert body["aimharder"]["bookState"] == 1
    bookings = (await sim.get("/_sim/bookings")).json()["bookings"]
    assert [str(booking["id"]) for booking in bookings] == [body["booking_id"]]
    sent = (await sim.get("/_sim/requests", params={"path": "/api/book"})).json()["requests"]
    assert sent[0]["cookies"]["amhrdrauth"] == COOKIE
    listed = (await gateway.client.get("/v1/prebookings", headers=bearer(key))).json()
    assert listed["total"] == 0


async def test_book_now_returns_full_as_is(gateway: Gateway, sim: httpx.AsyncClient) -> None:
    key = await ready_user(gateway, sim)
    day = class_day()
    await add_sim_class(sim, day, open_now=True, capacity=0)

    response = await gateway.client.post("/v1/bookings", json=booking_body(day), headers=bearer(key))

    assert response.status_code == 200
    body = response.json()
    assert (body["outcome"], body["book_state"], body["booking_id"]) == ("full", -1, None)
    assert body["error_message"] == "La clase está completa"
    assert body["aimharder"]["errorMssgLang"] == "ERROR_CLASE_COMPLETA"


@pytest.mark.parametrize("lang", ["es", "ca", "en"])
async def test_too_early_creates_prebooking(
    gateway: Gateway, sim: httpx.AsyncClient, events: EventReader, lang: str
) -> None:
    key = await ready_user(gateway, sim)
    assert (await sim.put("/_sim/config", json={"lang": lang})).status_code == 200
    day = class_day()
    # The box is configured with 4 days, the simulator's message states 3, and AimHarder's text takes precedence.
    await add_sim_class(sim, day, open_now=False, window_days=3)

    response = await gateway.client.post(
        "/v1/bookings", json=booking_body(day, class_time="09:00"), headers=bearer(key)
    )

    assert response.status_code == 202, response.text
    prebooking = response.json()
    assert datetime.fromisoformat(prebooking["execute_at"]) == at_nine(day) - timedelta(days=3)
    assert prebooking["status"] == "pending"
    assert prebooking["class_id"] == "7001"
    assert response.headers["Location"] == f"/v1/prebookings/{prebooking['id']}"
    event = await events.next()
    assert event.data["prebooking_id"] == prebooking["id"]
    assert event.data["execute_at_ms"] == prebooking["execute_at_ms"]
    assert (await sim.get("/_sim/bookings")).json()["bookings"] == []


@pytest.mark.parametrize("lang", ["es", "ca", "en"])
async def test_too_early_in_hours(gateway: Gateway, sim: httpx.AsyncClient, lang: str) -> None:
    key = await ready_user(gateway, sim)
    await sim.put("/_sim/config", json={"lang": lang})
    day = class_day()
    await add_sim_class(sim, day, open_now=False, window_hours=5)

    response = await gateway.client.post(
        "/v1/bookings", json=booking_body(day, class_time="09:00"), headers=bearer(key)
    )

    assert response.status_code == 202, response.text
    assert datetime.fromisoformat(response.json()["execute_at"]) == at_nine(day) - timedelta(hours=5)


async def test_too_early_looks_up_class_time(gateway: Gateway, sim: httpx.AsyncClient) -> None:
    key = await ready_user(gateway, sim)
    day = class_day()
    await add_sim_class(sim, day, open_now=False, window_days=2, time="18:30 - 19:30", box=BOX_ID)

    response = await gateway.client.post("/v1/bookings", json=booking_body(day), headers=bearer(key))

    assert response.status_code == 202, response.text
    expected = datetime(day.year, day.month, day.day, 18, 30, tzinfo=UTC) - timedelta(days=2)
    assert datetime.fromisoformat(response.json()["execute_at"]) == expected
    listings = (await sim.get("/_sim/requests", params={"path": "/api/bookings"})).json()["requests"]
    assert len(listings) == 1
    assert listings[0]["cookies"]["amhrdrauth"] == COOKIE


async def test_too_early_unlisted_class_needs_time(gateway: Gateway, sim: httpx.AsyncClient) -> None:
    key = await ready_user(gateway, sim)
    day = class_day()
    await add_sim_class(sim, day, open_now=False, box="9999")

    response = await gateway.client.post("/v1/bookings", json=booking_body(day), headers=bearer(key))

    assert response.status_code == 422
    assert response.json()["field"] == "class_time"
    assert "no class 7001" in response.json()["detail"]


async def test_too_early_twice_is_duplicate(gateway: Gateway, sim: httpx.AsyncClient) -> None:
    key = await ready_user(gateway, sim)
    day = class_day()
    await add_sim_class(sim, day, open_now=False)
    first = await gateway.client.post("/v1/bookings", json=booking_body(day, class_time="09:00"), headers=bearer(key))

    second = await gateway.client.post("/v1/bookings", json=booking_body(day, class_time="09:00"), headers=bearer(key))

    assert second.status_code == 409
    assert second.json()["existing_id"] == first.json()["id"]


async def test_logout_answer_is_424(gateway: Gateway, sim: httpx.AsyncClient) -> None:
    key = await ready_user(gateway, sim, sim_session=False)
    day = class_day()
    await add_sim_class(sim, day, open_now=True)

    response = await gateway.client.post("/v1/bookings", json=booking_body(day), headers=bearer(key))

    assert response.status_code == 424
    assert response.json()["error"] == "AimHarder session expired"
    assert "log in to AimHarder again" in response.json()["detail"]
    assert "WWW-Authenticate" not in response.headers


async def test_missing_session_is_424(gateway: Gateway, sim: httpx.AsyncClient) -> None:
    await gateway.put_box(BOX, aimharder_id=BOX_ID, timezone="UTC", window_days=4)
    key = await gateway.create_user_key(USER)

    response = await gateway.client.post("/v1/bookings", json=booking_body(class_day()), headers=bearer(key))

    assert response.status_code == 424
    assert f"PUT /v1/sessions/{USER}" in response.json()["detail"]
    assert (await sim.get("/_sim/requests")).json()["requests"] == []


async def test_unknown_box_is_422(gateway: Gateway, sim: httpx.AsyncClient) -> None:
    key = await ready_user(gateway, sim)
    response = await gateway.client.post(
        "/v1/bookings", json={**booking_body(class_day()), "box": "otherbox"}, headers=bearer(key)
    )
    assert response.status_code == 422
    assert "'otherbox'" in response.json()["detail"]


async def test_unreachable_aimharder_is_502(start_gateway: GatewayFactory, sim: httpx.AsyncClient) -> None:
    gateway = await start_gateway(aimharder_base_url=f"http://127.0.0.1:{free_port()}")
    key = await ready_user(gateway, sim)

    response = await gateway.client.post("/v1/bookings", json=booking_body(class_day()), headers=bearer(key))

    assert response.status_code == 502
    assert "'simbox'" in response.json()["detail"]
