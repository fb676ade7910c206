"""The /_sim/ control API: configuration, validation, recording and reset."""

from __future__ import annotations

import time

import pytest

DEFAULT_CONFIG = {"delay_ms": 0.0, "clock_offset_ms": 0.0, "lang": "es", "session_ttl_ms": 1_800_000}


async def test_config_defaults(sim):
    response = await sim.client.get("/_sim/config")

    assert response.status_code == 200
    assert response.json() == DEFAULT_CONFIG


async def test_config_partial_update(sim):
    updated = await sim.configure(lang="ca")
    second = await sim.configure(delay_ms=5, clock_offset_ms=-250.5)

    assert updated == {**DEFAULT_CONFIG, "lang": "ca"}
    assert second == {**DEFAULT_CONFIG, "lang": "ca", "delay_ms": 5.0, "clock_offset_ms": -250.5}
    assert (await sim.client.get("/_sim/config")).json() == second


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"lang": "fr"}, "lang"),
        ({"delay_ms": -1}, "delay_ms"),
        ({"delay_ms": "fast"}, "delay_ms"),
        ({"clock_offset_ms": True}, "clock_offset_ms"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_config_invalid(sim, body, field):
    response = await sim.client.put("/_sim/config", json=body)

    assert response.status_code == 400
    assert f"field '{field}'" in response.json()["error"]
    assert (await sim.client.get("/_sim/config")).json() == DEFAULT_CONFIG


async def test_config_invalid_update_changes_nothing(sim):
    response = await sim.client.put("/_sim/config", json={"lang": "en", "delay_ms": -5})

    assert response.status_code == 400
    assert (await sim.client.get("/_sim/config")).json()["lang"] == "es"


async def test_class_created_with_defaults(sim):
    created = await sim.add_class(id=42, capacity=12, box=2468)

    assert created == {
        "id": 42,
        "day": sim.day,
        "capacity": 12,
        "opens_at_ms": None,
        "window_days": 4,
        "name": "WOD",
        "time": "07:00 - 08:00",
        "box": "2468",
        "activity_id": 1,
    }


async def test_class_repost_replaces(sim):
    await sim.add_class(capacity=0)
    await sim.add_session()
    assert (await sim.book()).json()["bookState"] == -1

    await sim.add_class(capacity=3)

    assert (await sim.book()).json()["bookState"] == 1
    assert len((await sim.client.get("/_sim/classes")).json()["classes"]) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"day": "20261208", "capacity": 1}, "id"),
        ({"id": "1", "day": "20261208", "capacity": 1}, "id"),
        ({"id": 1, "capacity": 1}, "day"),
        ({"id": 1, "day": "20260230", "capacity": 1}, "day"),
        ({"id": 1, "day": "20261208"}, "capacity"),
        ({"id": 1, "day": "20261208", "capacity": -1}, "capacity"),
        ({"id": 1, "day": "20261208", "capacity": 1, "opens_at_ms": "soon"}, "opens_at_ms"),
        ({"id": 1, "day": "20261208", "capacity": 1, "window_days": 4, "window_hours": 2}, "window_hours"),
        ({"id": 1, "day": "20261208", "capacity": 1, "window_days": 0}, "window_days"),
        ({"id": 1, "day": "20261208", "capacity": 1, "time": "7:00-8:00"}, "time"),
        ({"id": 1, "day": "20261208", "capacity": 1, "box": True}, "box"),
        ({"id": 1, "day": "20261208", "capacity": 1, "opens_at": 5}, "opens_at"),
    ],
)
async def test_class_invalid(sim, body, field):
    response = await sim.client.post("/_sim/classes", json=body)

    assert response.status_code == 400
    assert f"field '{field}'" in response.json()["error"]


async def test_class_body_not_json(sim):
    response = await sim.client.post("/_sim/classes", content=b"{not json")

    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


async def test_session_created(sim):
    session = await sim.add_session(expires_at_ms=1_900_000_000_000, token="token-ana", fingerprint="fp")

    assert session == {
        "user": sim.user,
        "cookie": sim.cookie,
        "token": "token-ana",
        "fingerprint": "fp",
        "expires_at_ms": 1_900_000_000_000,
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cookie": "abc"}, "user"),
        ({"user": "ana@example.com"}, "cookie"),
        ({"user": "ana@example.com", "cookie": "a b;c"}, "cookie"),
        ({"user": "ana@example.com", "cookie": "abc", "expires_at_ms": "never"}, "expires_at_ms"),
    ],
)
async def test_session_invalid(sim, body, field):
    response = await sim.client.post("/_sim/sessions", json=body)

    assert response.status_code == 400
    assert f"field '{field}'" in response.json()["error"]


async def test_revoke_unknown_session(sim):
    response = await sim.client.delete("/_sim/sessions/missing")

    assert response.status_code == 404
    assert "POST /_sim/sessions" in response.json()["error"]


async def test_user_invalid(sim):
    response = await sim.client.post("/_sim/users", json={"username": "ana@example.com"})

    assert response.status_code == 400
    assert "field 'password'" in response.json()["error"]


async def test_unknown_control_route(sim):
    response = await sim.client.get("/_sim/nothing")

    assert response.status_code == 404
    assert "/_sim/classes" in response.json()["error"]


async def test_control_wrong_method(sim):
    response = await sim.client.delete("/_sim/config")

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, PUT"


async def test_requests_recorded(sim):
    await sim.add_class()
    await sim.add_session()

    before_ns = time.time_ns()
    answer = (await sim.book(family_id="12")).json()
    after_ns = time.time_ns()

    [entry] = await sim.recorded()
    assert entry["seq"] == 1
    assert entry["method"] == "POST"
    assert entry["path"] == "/api/book"
    assert entry["form"] == {"id": "1", "day": sim.day, "insist": "0", "familyId": "12"}
    assert entry["json"] is None
    assert entry["cookies"] == {"amhrdrauth": sim.cookie}
    assert entry["headers"]["x-requested-with"] == "XMLHttpRequest"
    assert entry["headers"]["host"] == f"127.0.0.1:{sim.server.port}"
    assert entry["status"] == 200
    assert entry["answer"] == answer
    assert entry["stamp_source"] == "kernel"
    assert before_ns <= entry["arrival_ns"] <= after_ns


async def test_requests_record_query_and_json(sim):
    await sim.client.get("/api/bookings", params={"day": sim.day, "box": "7"})
    await sim.client.post("/api/login", json={"username": "x", "password": "y"})

    listing, login = await sim.recorded()
    assert listing["query"] == {"day": sim.day, "box": "7"}
    assert listing["answer"] == {"logout": 1}
    assert login["json"] == {"username": "x", "password": "y"}


async def test_requests_path_filter(sim):
    await sim.add_session()
    await sim.client.get("/api/bookings", params={"day": sim.day}, headers=sim.headers())
    await sim.book()
    await sim.book()

    booked = await sim.recorded("/api/book")

    assert [entry["path"] for entry in booked] == ["/api/book", "/api/book"]
    assert [entry["seq"] for entry in booked] == [2, 3]


async def test_control_requests_not_recorded(sim):
    await sim.add_class()
    await sim.client.get("/_sim/config")

    assert await sim.recorded() == []


async def test_unknown_api_route_recorded(sim):
    response = await sim.client.get("/api/unknown")

    assert response.status_code == 404
    [entry] = await sim.recorded()
    assert entry["path"] == "/api/unknown"
    assert entry["status"] == 404


async def test_delay_holds_response(sim):
    await sim.configure(delay_ms=300)

    response = await sim.client.post("/api/tokenUpdate", json={"token": "x"})
    answered_ns = time.time_ns()

    [entry] = await sim.recorded()
    assert response.json() == {"logout": 1}
    # A lower bound only: the response cannot leave before the delay has passed.
    assert answered_ns - entry["arrival_ns"] >= 300 * 1_000_000 * 0.9


async def test_bookings_listed(sim):
    await sim.add_class(id=5)
    await sim.add_session()
    booking_id = (await sim.book(class_id=5, family_id="3")).json()["id"]

    bookings = (await sim.client.get("/_sim/bookings")).json()["bookings"]

    [booking] = bookings
    assert booking["id"] == booking_id
    assert booking["user"] == sim.user
    assert booking["family_id"] == "3"
    assert booking["class_id"] == 5
    assert booking["day"] == sim.day
    assert booking["book_state"] == 1
    assert isinstance(booking["arrival_ns"], int)


async def test_reset_clears_everything(sim):
    await sim.add_class()
    await sim.add_session()
    await sim.client.post("/_sim/users", json={"username": "u", "password": "p"})
    await sim.configure(lang="en", delay_ms=1)
    await sim.book()

    response = await sim.client.post("/_sim/reset")

    assert response.status_code == 200
    assert (await sim.client.get("/_sim/config")).json() == DEFAULT_CONFIG
    assert (await sim.client.get("/_sim/classes")).json() == {"classes": []}
    assert (await sim.client.get("/_sim/bookings")).json() == {"bookings": []}
    assert await sim.recorded() == []
    assert (await sim.book()).json() == {"logout": 1}
    login = await sim.client.post("/api/login", json={"username": "u", "password": "p"})
    assert login.json()["errorMssgLang"] == "ERROR_LOGIN_INCORRECTO"


async def test_reset_keeps_booking_ids_unique(sim):
    await sim.add_class()
    await sim.add_session()
    first = (await sim.book()).json()["id"]

    await sim.client.post("/_sim/reset")
    await sim.add_class()
    await sim.add_session()
    second = (await sim.book()).json()["id"]

    assert first != second
