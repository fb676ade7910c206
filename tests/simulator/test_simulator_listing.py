"""GET /api/bookings and POST /api/cancelBook."""

from __future__ import annotations


async def list_day(sim, cookie: str | None = "cookie-ana", **params: str) -> dict:
    query = {"day": sim.day, "familyId": "", "box": "", **params}
    response = await sim.client.get("/api/bookings", params=query, headers=sim.headers(cookie))
    assert response.status_code == 200, response.text
    return response.json()


async def cancel(sim, booking_id: str, cookie: str = "cookie-ana"):
    form = {"id": booking_id, "late": "0", "familyId": ""}
    return await sim.client.post("/api/cancelBook", data=form, headers=sim.headers(cookie))


async def test_listing_counts_and_caller_state(sim):
    await sim.add_class(id=1, capacity=1, name="CrossFit", time="07:00 - 08:00")
    await sim.add_class(id=2, capacity=8, name="Halterofilia", time="18:30 - 19:30")
    await sim.add_session()
    await sim.add_session(user="bea@example.com", cookie="cookie-bea")
    await sim.book("cookie-bea", class_id=1)
    await sim.book("cookie-ana", class_id=1, insist=1)

    listing = await list_day(sim)

    first, second = listing["bookings"]
    assert listing["day"] == sim.day
    assert first["id"] == 1
    assert first["className"] == "CrossFit"
    assert first["time"] == "07:00 - 08:00"
    assert first["ocupation"] == 1
    assert first["limit"] == 1
    assert first["waitlist"] == 1
    assert first["bookState"] == 0
    assert second["id"] == 2
    assert second["ocupation"] == 0
    assert second["bookState"] is None
    assert listing["timetable"] == [
        {"id": "0700_60", "time": "07:00 - 08:00"},
        {"id": "1830_60", "time": "18:30 - 19:30"},
    ]


async def test_listing_booked_state(sim):
    await sim.add_class()
    await sim.add_session()
    await sim.book()

    listing = await list_day(sim)

    assert listing["bookings"][0]["bookState"] == 1


async def test_listing_filters_box(sim):
    await sim.add_class(id=1, box="2468")
    await sim.add_class(id=2, box="1357")
    await sim.add_class(id=3)
    await sim.add_session()

    listing = await list_day(sim, box="2468")

    assert [entry["id"] for entry in listing["bookings"]] == [1, 3]


async def test_listing_filters_day(sim):
    await sim.add_class(id=1, day="20261208")
    await sim.add_class(id=2, day="20261209")
    await sim.add_session()

    listing = await list_day(sim, day="20261209")

    assert [entry["id"] for entry in listing["bookings"]] == [2]


async def test_listing_without_session(sim):
    await sim.add_class()

    listing = await list_day(sim, cookie=None)

    assert listing == {"logout": 1}


async def test_listing_invalid_day(sim):
    await sim.add_session()

    response = await sim.client.get("/api/bookings", params={"day": "tomorrow"}, headers=sim.headers())

    assert response.status_code == 400
    assert "field 'day'" in response.json()["error"]


async def test_cancel_frees_place(sim):
    await sim.add_class(capacity=1)
    await sim.add_session()
    booking_id = (await sim.book()).json()["id"]

    response = await cancel(sim, booking_id)

    assert response.status_code == 200
    assert response.json() == {"cancelState": 1}
    listing = await list_day(sim)
    assert listing["bookings"][0]["ocupation"] == 0
    assert listing["bookings"][0]["bookState"] is None
    assert (await sim.book()).json()["bookState"] == 1


async def test_cancel_promotes_waitlist(sim):
    await sim.add_class(capacity=1)
    await sim.add_session()
    await sim.add_session(user="bea@example.com", cookie="cookie-bea")
    booked_id = (await sim.book("cookie-ana")).json()["id"]
    waiting_id = (await sim.book("cookie-bea", insist=1)).json()["id"]

    await cancel(sim, booked_id)

    bookings = (await sim.client.get("/_sim/bookings")).json()["bookings"]
    assert [(booking["id"], booking["book_state"]) for booking in bookings] == [(waiting_id, 1)]


async def test_cancel_unknown_booking(sim):
    await sim.add_session()

    response = await cancel(sim, "999")

    assert response.json() == {
        "cancelState": -1,
        "errorMssg": "Reserva no encontrada",
        "errorMssgLang": "ERROR_RESERVA_NO_ENCONTRADA",
    }


async def test_cancel_other_users_booking(sim):
    await sim.add_class()
    await sim.add_session()
    await sim.add_session(user="bea@example.com", cookie="cookie-bea")
    booking_id = (await sim.book("cookie-bea")).json()["id"]

    response = await cancel(sim, booking_id, cookie="cookie-ana")

    assert response.json()["cancelState"] == -1
    bookings = (await sim.client.get("/_sim/bookings")).json()["bookings"]
    assert [booking["id"] for booking in bookings] == [booking_id]


async def test_cancel_without_session(sim):
    response = await sim.client.post("/api/cancelBook", data={"id": "1", "late": "0", "familyId": ""})

    assert response.json() == {"logout": 1}


async def test_cancel_missing_id(sim):
    await sim.add_session()

    response = await sim.client.post("/api/cancelBook", data={"late": "0"}, headers=sim.headers())

    assert response.status_code == 400
    assert "field 'id'" in response.json()["error"]
