"""POST /api/book: every bookState the simulator returns, languages and the clock."""

from __future__ import annotations

import time

import pytest

HOUR_MS = 60 * 60 * 1000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_book_open_class(sim):
    await sim.add_class(capacity=5)
    await sim.add_session()

    response = await sim.book()

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    answer = response.json()
    assert answer["bookState"] == 1
    assert answer["clasesContratadas"] == ""
    assert answer["id"].isdigit()
    assert set(answer) == {"clasesContratadas", "bookState", "id"}


async def test_booking_ids_unique(sim):
    await sim.add_class(capacity=5)
    booking_ids = []
    for index in range(3):
        cookie = f"cookie-{index}"
        await sim.add_session(user=f"user{index}@example.com", cookie=cookie)
        booking_ids.append((await sim.book(cookie)).json()["id"])

    assert len(set(booking_ids)) == 3


async def test_capacity_then_full_then_waitlist(sim):
    await sim.add_class(capacity=2)
    for index in range(4):
        await sim.add_session(user=f"user{index}@example.com", cookie=f"cookie-{index}")

    first = (await sim.book("cookie-0")).json()
    second = (await sim.book("cookie-1")).json()
    full = (await sim.book("cookie-2", insist=0)).json()
    waitlisted = (await sim.book("cookie-3", insist=1)).json()

    assert first["bookState"] == 1
    assert second["bookState"] == 1
    assert full == {"bookState": -1, "errorMssg": "La clase está completa", "errorMssgLang": "ERROR_CLASE_COMPLETA"}
    assert waitlisted["bookState"] == 0
    assert waitlisted["clasesContratadas"] == ""
    assert waitlisted["id"].isdigit()

    bookings = (await sim.client.get("/_sim/bookings")).json()["bookings"]
    states = sorted(booking["book_state"] for booking in bookings)
    assert states == [0, 1, 1]


async def test_second_booking_same_user(sim):
    await sim.add_class(capacity=5)
    await sim.add_session()

    first = (await sim.book()).json()
    second = (await sim.book()).json()

    assert first["bookState"] == 1
    assert second == {
        "bookState": -12,
        "errorMssg": "No puedes reservar más de una clase a la misma hora",
        "errorMssgLang": "NOPUEDESRESERVAMISMAHORA",
    }


async def test_second_booking_after_waitlist(sim):
    await sim.add_class(capacity=0)
    await sim.add_session()

    first = (await sim.book(insist=1)).json()
    second = (await sim.book(insist=1)).json()

    assert first["bookState"] == 0
    assert second["errorMssgLang"] == "NOPUEDESRESERVAMISMAHORA"


async def test_family_member_books_own_place(sim):
    await sim.add_class(capacity=5)
    await sim.add_session()

    own = (await sim.book(family_id="")).json()
    child = (await sim.book(family_id="777")).json()

    assert own["bookState"] == 1
    assert child["bookState"] == 1
    assert own["id"] != child["id"]


async def test_unknown_class(sim):
    await sim.add_class(id=1, day="20261208")
    await sim.add_session()

    unknown_id = (await sim.book(class_id=2)).json()
    unknown_day = (await sim.book(class_id=1, day="20261209")).json()

    expected = {"bookState": -3, "errorMssg": "Clase no encontrada", "errorMssgLang": "ERROR_CLASE_NO_ENCONTRADA"}
    assert unknown_id == expected
    assert unknown_day == expected


async def test_too_early_days(sim):
    await sim.add_class(opens_at_ms=now_ms() + HOUR_MS)
    await sim.add_session()

    answer = (await sim.book()).json()

    assert answer == {
        "bookState": -12,
        "errorMssg": "No puedes reservar clases con más de 4 días de antelación",
        "errorMssgLang": "ERROR_ANTELACION_CLIENTE",
    }


async def test_too_early_quotes_class_window(sim):
    await sim.add_class(opens_at_ms=now_ms() + HOUR_MS, window_days=2)
    await sim.add_session()

    answer = (await sim.book()).json()

    assert answer["errorMssg"] == "No puedes reservar clases con más de 2 días de antelación"


async def test_too_early_hours(sim):
    await sim.add_class(opens_at_ms=now_ms() + HOUR_MS, window_hours=48)
    await sim.add_session()

    answer = (await sim.book()).json()

    assert answer == {
        "bookState": -12,
        "errorMssg": "No puedes reservar clases con más de 48 horas de antelación",
        "errorMssgLang": "ERROR_ANTELACION_CLIENTE_HORAS",
    }


async def test_too_early_books_nothing(sim):
    await sim.add_class(opens_at_ms=now_ms() + HOUR_MS)
    await sim.add_session()

    await sim.book()

    bookings = (await sim.client.get("/_sim/bookings")).json()["bookings"]
    assert bookings == []


@pytest.mark.parametrize(
    ("lang", "window", "expected_message"),
    [
        ("es", {"window_days": 4}, "No puedes reservar clases con más de 4 días de antelación"),
        ("es", {"window_hours": 12}, "No puedes reservar clases con más de 12 horas de antelación"),
        ("ca", {"window_days": 4}, "No pots reservar classes amb més de 4 dies d'antelació"),
        ("ca", {"window_hours": 12}, "No pots reservar classes amb més de 12 hores d'antelació"),
        ("en", {"window_days": 4}, "You cannot book classes more than 4 days in advance"),
        ("en", {"window_hours": 12}, "You cannot book classes more than 12 hours in advance"),
    ],
)
async def test_too_early_languages(sim, lang, window, expected_message):
    await sim.configure(lang=lang)
    await sim.add_class(opens_at_ms=now_ms() + HOUR_MS, **window)
    await sim.add_session()

    answer = (await sim.book()).json()

    assert answer["bookState"] == -12
    assert answer["errorMssg"] == expected_message


async def test_language_changes_other_messages(sim):
    await sim.configure(lang="en")
    await sim.add_class(capacity=0)
    await sim.add_session()

    answer = (await sim.book(insist=0)).json()

    assert answer == {"bookState": -1, "errorMssg": "The class is full", "errorMssgLang": "ERROR_CLASE_COMPLETA"}


async def test_past_opening_books(sim):
    await sim.add_class(opens_at_ms=now_ms() - 1000)
    await sim.add_session()

    answer = (await sim.book()).json()

    assert answer["bookState"] == 1


async def test_clock_offset_moves_past_opening(sim):
    await sim.add_class(opens_at_ms=now_ms() + HOUR_MS)
    await sim.add_session()
    await sim.configure(clock_offset_ms=2 * HOUR_MS)

    answer = (await sim.book()).json()

    assert answer["bookState"] == 1


async def test_negative_clock_offset_delays_opening(sim):
    await sim.add_class(opens_at_ms=now_ms() - 1000)
    await sim.add_session()
    await sim.configure(clock_offset_ms=-HOUR_MS)

    answer = (await sim.book()).json()

    assert answer["errorMssgLang"] == "ERROR_ANTELACION_CLIENTE"


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"day": "20261208", "insist": "0", "familyId": ""}, "id"),
        ({"id": "abc", "day": "20261208", "insist": "0", "familyId": ""}, "id"),
        ({"id": "1", "insist": "0", "familyId": ""}, "day"),
        ({"id": "1", "day": "2026-12-08", "insist": "0", "familyId": ""}, "day"),
        ({"id": "1", "day": "20261332", "insist": "0", "familyId": ""}, "day"),
        ({"id": "1", "day": "20261208", "familyId": ""}, "insist"),
        ({"id": "1", "day": "20261208", "insist": "yes", "familyId": ""}, "insist"),
    ],
)
async def test_invalid_form_field(sim, form, field):
    await sim.add_class()
    await sim.add_session()

    response = await sim.client.post("/api/book", data=form, headers=sim.headers())

    assert response.status_code == 400
    assert f"field '{field}'" in response.json()["error"]


async def test_missing_family_id_books(sim):
    await sim.add_class()
    await sim.add_session()

    form = {"id": "1", "day": sim.day, "insist": "0"}
    response = await sim.client.post("/api/book", data=form, headers=sim.headers())

    assert response.json()["bookState"] == 1


async def test_logout_without_cookie(sim):
    await sim.add_class()

    response = await sim.book(cookie=None)

    assert response.status_code == 200
    assert response.json() == {"logout": 1}


async def test_logout_unknown_cookie(sim):
    await sim.add_class()
    await sim.add_session()

    answer = (await sim.book(cookie="not-a-session")).json()

    assert answer == {"logout": 1}


async def test_logout_expired_session(sim):
    await sim.add_class()
    await sim.add_session(expires_at_ms=now_ms() - 1000)

    answer = (await sim.book()).json()

    assert answer == {"logout": 1}


async def test_logout_when_clock_offset_passes_expiry(sim):
    await sim.add_class()
    await sim.add_session(expires_at_ms=now_ms() + HOUR_MS)
    await sim.configure(clock_offset_ms=2 * HOUR_MS)

    answer = (await sim.book()).json()

    assert answer == {"logout": 1}


async def test_logout_revoked_session(sim):
    await sim.add_class(capacity=5)
    await sim.add_session(user="bea@example.com", cookie="cookie-bea")
    before = (await sim.book("cookie-bea")).json()

    revoked = await sim.client.delete("/_sim/sessions/cookie-bea")
    after = (await sim.book("cookie-bea")).json()

    assert before["bookState"] == 1
    assert revoked.status_code == 200
    assert after == {"logout": 1}
