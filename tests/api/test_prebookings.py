"""``/v1/prebookings``: create, list, show, cancel and reschedule, with their events on NATS."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from api.conftest import Event, EventReader, Gateway, GatewayFactory, bearer
from prebook_common.models import Box, Prebooking, PrebookingStatus

USER = "ana@example.com"
BOX = "crossfitsol"


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


def in_hours(hours: float) -> datetime:
    return (datetime.now(UTC) + timedelta(hours=hours)).replace(microsecond=0)


def pinned(text: str):
    instant = datetime.fromisoformat(text)
    return lambda: instant


async def user_key(gateway: Gateway, *, box_fields: dict[str, Any] | None = None) -> str:
    await gateway.put_box(BOX, **(box_fields or {}))
    return await gateway.create_user_key(USER)


def class_body(**fields: Any) -> dict[str, Any]:
    return {"box": BOX, "class_id": "7001", "class_day": "2030-05-20", **fields}


async def set_status(gateway: Gateway, prebooking_id: str, status: PrebookingStatus, **values: Any) -> None:
    """Move a prebooking as the executor would, straight in the database."""
    async with gateway.state.sessions() as session:
        await session.exec(
            update(Prebooking).where(Prebooking.id == uuid.UUID(prebooking_id)).values(status=status, **values)
        )
        await session.commit()


def assert_event(event: Event, gateway: Gateway, name: str, prebooking_id: str) -> None:
    assert event.subject == gateway.names.subject(name)
    assert event.data["schema"] == f"prebooking.{name}/1"
    assert event.data["prebooking_id"] == prebooking_id


async def test_create_with_iso_execute_at(gateway: Gateway, events: EventReader) -> None:
    key = await user_key(gateway)
    execute_at = in_hours(30).astimezone(datetime.now().astimezone().tzinfo)
    body = class_body(execute_at=execute_at.isoformat(), insist=True, family_id=77)

    response = await gateway.client.post("/v1/prebookings", json=body, headers=bearer(key))

    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] == "pending"
    assert created["user_email"] == USER
    assert created["box_aimharder_id"] == "4242"
    assert created["insist"] is True
    assert created["family_id"] == "77"
    assert parse(created["execute_at"]) == execute_at
    assert created["execute_at_ms"] == int(execute_at.timestamp() * 1000)
    assert created["timezone"] == "Europe/Madrid"
    assert parse(created["execute_at_local"]) == execute_at
    assert parse(created["execute_at_local"]).utcoffset() in (timedelta(hours=1), timedelta(hours=2))

    event = await events.next()
    assert_event(event, gateway, "created", created["id"])
    assert event.message_id == f"{created['id']}:created"
    assert event.data["execute_at_ms"] == created["execute_at_ms"]


async def test_create_with_epoch_ms(gateway: Gateway, events: EventReader) -> None:
    key = await user_key(gateway)
    execute_at_ms = int(in_hours(5).timestamp() * 1000) + 123

    response = await gateway.client.post(
        "/v1/prebookings", json=class_body(execute_at=execute_at_ms), headers=bearer(key)
    )

    assert response.status_code == 201, response.text
    assert response.json()["execute_at_ms"] == execute_at_ms
    shown = await gateway.client.get(f"/v1/prebookings/{response.json()['id']}", headers=bearer(key))
    assert shown.json()["execute_at_ms"] == execute_at_ms
    assert (await events.next()).data["execute_at_ms"] == execute_at_ms


@pytest.mark.parametrize(
    ("window", "class_day", "class_time", "expected_utc", "expected_local"),
    [
        # Spring change on 2027-03-28: the class is CEST, the opening four days before is CET.
        ({"window_days": 4}, "2027-03-29", "09:00", "2027-03-25T08:00:00+00:00", "2027-03-25T09:00:00+01:00"),
        ({"window_hours": 96}, "2027-03-29", "09:00", "2027-03-25T07:00:00+00:00", "2027-03-25T08:00:00+01:00"),
        # Autumn change on 2027-10-31: the class is CET, the opening four days before is CEST.
        ({"window_days": 4}, "2027-10-31", "09:00", "2027-10-27T07:00:00+00:00", "2027-10-27T09:00:00+02:00"),
        ({"window_hours": 96}, "2027-10-31", "09:00", "2027-10-27T08:00:00+00:00", "2027-10-27T10:00:00+02:00"),
        ({"window_days": 2}, "2027-11-01", "18:30", "2027-10-30T16:30:00+00:00", "2027-10-30T18:30:00+02:00"),
    ],
    ids=["spring-days", "spring-hours", "autumn-days", "autumn-hours", "autumn-evening"],
)
async def test_create_computes_opening_across_dst(
    start_gateway: GatewayFactory,
    events: EventReader,
    window: dict[str, int],
    class_day: str,
    class_time: str,
    expected_utc: str,
    expected_local: str,
) -> None:
    # The clock is pinned before both changes, so these 2027 classes are in the future.
    gateway = await start_gateway(clock=pinned("2027-01-01T00:00:00+00:00"))
    key = await user_key(gateway, box_fields=window)

    response = await gateway.client.post(
        "/v1/prebookings", json=class_body(class_day=class_day, class_time=class_time), headers=bearer(key)
    )

    assert response.status_code == 201, response.text
    created = response.json()
    assert parse(created["execute_at"]) == parse(expected_utc)
    assert created["execute_at_local"] == expected_local
    assert (await events.next()).data["execute_at_ms"] == int(parse(expected_utc).timestamp() * 1000)


async def test_create_rejections_publish_nothing(gateway: Gateway, events: EventReader) -> None:
    key = await user_key(gateway)
    rejected = await gateway.client.post("/v1/prebookings", json=class_body(box="nobox", class_time="09:00"), headers=bearer(key))
    assert rejected.status_code == 422

    accepted = await gateway.client.post("/v1/prebookings", json=class_body(class_time="09:00"), headers=bearer(key))
    assert accepted.status_code == 201

    first = await events.next()
    assert first.data["prebooking_id"] == accepted.json()["id"]
    assert await events.stream_messages() == 1


@pytest.mark.parametrize(
    ("fields", "status", "named"),
    [
        ({"box": "nobox", "class_time": "09:00"}, 422, "'nobox'"),
        ({"class_day": "2030-02-30", "class_time": "09:00"}, 422, "'2030-02-30'"),
        ({"class_day": "20300520", "class_time": "09:00"}, 422, "'20300520'"),
        ({"class_time": "25:00"}, 422, "'25:00'"),
        ({"class_time": "9am"}, 422, "'9am'"),
        ({"execute_at": "2030-05-16T09:00:00"}, 422, "no UTC offset"),
        ({"execute_at": "next tuesday"}, 422, "'next tuesday'"),
        ({"execute_at": 1_900_000_000}, 422, "1900000000"),
        ({"execute_at": "2020-01-01T00:00:00Z"}, 422, "2020-01-01T00:00:00+00:00"),
        ({}, 422, "class_time is needed"),
        ({"class_id": "7 001", "class_time": "09:00"}, 422, "'7 001'"),
        ({"class_time": "09:00", "classTime": "09:00"}, 422, "classTime"),
    ],
    ids=[
        "unknown-box", "impossible-day", "day-format", "hour-25", "time-format", "naive-instant",
        "instant-text", "seconds-not-ms", "past-instant", "no-time", "bad-class-id", "unknown-field",
    ],
)
async def test_create_rejects_invalid(gateway: Gateway, fields: dict[str, Any], status: int, named: str) -> None:
    key = await user_key(gateway)
    response = await gateway.client.post("/v1/prebookings", json=class_body(**fields), headers=bearer(key))
    assert response.status_code == status, response.text
    assert named in response.json()["detail"]


async def test_create_rejects_opened_window(gateway: Gateway) -> None:
    key = await user_key(gateway, box_fields={"window_days": 4})
    day = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()

    response = await gateway.client.post(
        "/v1/prebookings", json=class_body(class_day=day, class_time="09:00"), headers=bearer(key)
    )

    assert response.status_code == 422
    assert f"on {day} opened at" in response.json()["detail"]
    assert "POST /v1/bookings" in response.json()["detail"]


async def test_create_rejects_box_without_window(gateway: Gateway) -> None:
    key = await gateway.create_user_key(USER)
    async with gateway.state.sessions() as session:
        session.add(Box(subdomain="nowindow", aimharder_id="1"))
        await session.commit()

    response = await gateway.client.post(
        "/v1/prebookings", json=class_body(box="nowindow", class_time="09:00"), headers=bearer(key)
    )

    assert response.status_code == 422
    assert "'nowindow' has no booking window" in response.json()["detail"]


async def test_create_rejects_live_duplicate(gateway: Gateway) -> None:
    key = await user_key(gateway)
    first = await gateway.client.post("/v1/prebookings", json=class_body(class_time="09:00"), headers=bearer(key))
    first_id = first.json()["id"]

    duplicate = await gateway.client.post(
        "/v1/prebookings", json=class_body(execute_at=in_hours(3).isoformat()), headers=bearer(key)
    )
    assert duplicate.status_code == 409
    assert duplicate.json()["existing_id"] == first_id
    assert first_id in duplicate.json()["detail"]

    await set_status(gateway, first_id, PrebookingStatus.SCHEDULED)
    still_duplicate = await gateway.client.post("/v1/prebookings", json=class_body(class_time="09:00"), headers=bearer(key))
    assert still_duplicate.status_code == 409

    other_family = await gateway.client.post(
        "/v1/prebookings", json=class_body(class_time="09:00", family_id="5"), headers=bearer(key)
    )
    assert other_family.status_code == 201

    await set_status(gateway, first_id, PrebookingStatus.FAILED)
    after_final = await gateway.client.post("/v1/prebookings", json=class_body(class_time="09:00"), headers=bearer(key))
    assert after_final.status_code == 201
    assert after_final.json()["id"] != first_id


async def test_create_rejects_over_pending_limit(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(max_pending_per_user=2)
    key = await user_key(gateway)
    ids = []
    for class_id in ("1", "2"):
        response = await gateway.client.post(
            "/v1/prebookings", json=class_body(class_id=class_id, class_time="09:00"), headers=bearer(key)
        )
        assert response.status_code == 201
        ids.append(response.json()["id"])

    third = await gateway.client.post("/v1/prebookings", json=class_body(class_id="3", class_time="09:00"), headers=bearer(key))
    assert third.status_code == 409
    assert "already has 2 pending or scheduled" in third.json()["detail"]
    assert "PREBOOK_MAX_PENDING_PER_USER=2" in third.json()["detail"]

    other_user = await gateway.create_user_key("bea@example.com")
    for_bea = await gateway.client.post("/v1/prebookings", json=class_body(class_id="3", class_time="09:00"), headers=bearer(other_user))
    assert for_bea.status_code == 201

    await set_status(gateway, ids[0], PrebookingStatus.PREPARED)
    after_prepare = await gateway.client.post("/v1/prebookings", json=class_body(class_id="3", class_time="09:00"), headers=bearer(key))
    assert after_prepare.status_code == 201


async def test_list_paginates_and_filters(gateway: Gateway) -> None:
    key = await user_key(gateway)
    instants = [in_hours(hours) for hours in (30, 10, 20)]
    ids = {}
    for index, instant in enumerate(instants):
        response = await gateway.client.post(
            "/v1/prebookings", json=class_body(class_id=str(index), execute_at=instant.isoformat()), headers=bearer(key)
        )
        ids[instant] = response.json()["id"]
    by_time = [ids[instant] for instant in sorted(instants)]

    first = (await gateway.client.get("/v1/prebookings", params={"limit": 2}, headers=bearer(key))).json()
    assert [item["id"] for item in first["items"]] == by_time[:2]
    assert (first["total"], first["limit"], first["offset"]) == (3, 2, 0)

    second = (await gateway.client.get("/v1/prebookings", params={"limit": 2, "offset": 2}, headers=bearer(key))).json()
    assert [item["id"] for item in second["items"]] == by_time[2:]
    assert second["total"] == 3

    await gateway.client.delete(f"/v1/prebookings/{by_time[1]}", headers=bearer(key))
    cancelled = (await gateway.client.get("/v1/prebookings", params={"status": "cancelled"}, headers=bearer(key))).json()
    assert [item["id"] for item in cancelled["items"]] == [by_time[1]]
    assert cancelled["total"] == 1
    pending = (await gateway.client.get("/v1/prebookings", params={"status": "pending"}, headers=bearer(key))).json()
    assert [item["id"] for item in pending["items"]] == [by_time[0], by_time[2]]

    invalid = await gateway.client.get("/v1/prebookings", params={"status": "done"}, headers=bearer(key))
    assert invalid.status_code == 422
    assert "'done'" in invalid.json()["detail"]
    too_many = await gateway.client.get("/v1/prebookings", params={"limit": 101}, headers=bearer(key))
    assert too_many.status_code == 422


async def test_show_returns_outcome(gateway: Gateway) -> None:
    key = await user_key(gateway)
    created = (await gateway.client.post("/v1/prebookings", json=class_body(class_time="09:00"), headers=bearer(key))).json()
    fired_at = datetime(2030, 5, 16, 7, 0, 0, 250_000, tzinfo=UTC)
    await set_status(
        gateway, created["id"], PrebookingStatus.BOOKED,
        book_state=1, booking_id="100000123", fire_latency_us=87, response_ms=12.5, fired_at=fired_at, attempts=1,
    )

    shown = await gateway.client.get(f"/v1/prebookings/{created['id']}", headers=bearer(key))

    assert shown.status_code == 200
    body = shown.json()
    assert body["status"] == "booked"
    assert (body["book_state"], body["booking_id"], body["attempts"]) == (1, "100000123", 1)
    assert (body["fire_latency_us"], body["response_ms"]) == (87, 12.5)
    assert parse(body["fired_at"]) == fired_at
    assert body["error_code"] is None

    unknown = await gateway.client.get(f"/v1/prebookings/{uuid.uuid4()}", headers=bearer(key))
    assert unknown.status_code == 404
    not_uuid = await gateway.client.get("/v1/prebookings/abc", headers=bearer(key))
    assert not_uuid.status_code == 422


async def test_cancel_publishes_after_commit(gateway: Gateway, events: EventReader) -> None:
    key = await user_key(gateway)
    created = (await gateway.client.post("/v1/prebookings", json=class_body(class_time="09:00"), headers=bearer(key))).json()
    await set_status(gateway, created["id"], PrebookingStatus.SCHEDULED)

    cancelled = await gateway.client.delete(f"/v1/prebookings/{created['id']}", headers=bearer(key))

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert_event(await events.next(), gateway, "created", created["id"])
    event = await events.next()
    assert_event(event, gateway, "cancelled", created["id"])
    assert event.message_id == f"{created['id']}:cancelled"
    assert event.data["execute_at_ms"] == created["execute_at_ms"]
    shown = await gateway.client.get(f"/v1/prebookings/{created['id']}", headers=bearer(key))
    assert shown.json()["status"] == "cancelled"

    again = await gateway.client.delete(f"/v1/prebookings/{created['id']}", headers=bearer(key))
    assert again.status_code == 409
    assert "is cancelled" in again.json()["detail"]


@pytest.mark.parametrize("status", [PrebookingStatus.FIRING, PrebookingStatus.BOOKED, PrebookingStatus.MISSED])
async def test_cancel_conflicts_once_firing(gateway: Gateway, events: EventReader, status: PrebookingStatus) -> None:
    key = await user_key(gateway)
    created = (await gateway.client.post("/v1/prebookings", json=class_body(class_time="09:00"), headers=bearer(key))).json()
    await set_status(gateway, created["id"], status)

    response = await gateway.client.delete(f"/v1/prebookings/{created['id']}", headers=bearer(key))

    assert response.status_code == 409
    assert response.json()["status"] == status
    assert f"is {status}" in response.json()["detail"]
    shown = await gateway.client.get(f"/v1/prebookings/{created['id']}", headers=bearer(key))
    assert shown.json()["status"] == status
    await events.next()
    assert await events.stream_messages() == 1


async def test_cancel_prepared_is_allowed(gateway: Gateway) -> None:
    key = await user_key(gateway)
    created = (await gateway.client.post("/v1/prebookings", json=class_body(class_time="09:00"), headers=bearer(key))).json()
    await set_status(gateway, created["id"], PrebookingStatus.PREPARED)

    response = await gateway.client.delete(f"/v1/prebookings/{created['id']}", headers=bearer(key))

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"


async def test_patch_reschedules(gateway: Gateway, events: EventReader) -> None:
    key = await user_key(gateway)
    created = (await gateway.client.post("/v1/prebookings", json=class_body(class_time="09:00"), headers=bearer(key))).json()
    later = in_hours(50)

    patched = await gateway.client.patch(
        f"/v1/prebookings/{created['id']}", json={"execute_at": later.isoformat()}, headers=bearer(key)
    )

    assert patched.status_code == 200, patched.text
    assert parse(patched.json()["execute_at"]) == later
    assert patched.json()["status"] == "pending"
    await events.next()
    event = await events.next()
    assert_event(event, gateway, "rescheduled", created["id"])
    assert event.data["execute_at_ms"] == int(later.timestamp() * 1000)
    assert event.data["previous_execute_at_ms"] == created["execute_at_ms"]
    assert event.message_id.startswith(f"{created['id']}:rescheduled:")

    back = await gateway.client.patch(
        f"/v1/prebookings/{created['id']}", json={"execute_at": created["execute_at_ms"]}, headers=bearer(key)
    )
    assert back.status_code == 200
    second = await events.next()
    assert second.data["previous_execute_at_ms"] == int(later.timestamp() * 1000)
    assert second.message_id != event.message_id

    unchanged = await gateway.client.patch(
        f"/v1/prebookings/{created['id']}", json={"execute_at": created["execute_at_ms"]}, headers=bearer(key)
    )
    assert unchanged.status_code == 200
    assert await events.stream_messages() == 3


async def test_patch_rejects(gateway: Gateway) -> None:
    key = await user_key(gateway)
    created = (await gateway.client.post("/v1/prebookings", json=class_body(class_time="09:00"), headers=bearer(key))).json()
    url = f"/v1/prebookings/{created['id']}"

    past = await gateway.client.patch(url, json={"execute_at": "2021-06-01T10:00:00+02:00"}, headers=bearer(key))
    assert past.status_code == 422
    assert "2021-06-01T08:00:00+00:00" in past.json()["detail"]

    naive = await gateway.client.patch(url, json={"execute_at": "2031-06-01T10:00:00"}, headers=bearer(key))
    assert naive.status_code == 422
    assert "'2031-06-01T10:00:00'" in naive.json()["detail"]

    missing = await gateway.client.patch(url, json={}, headers=bearer(key))
    assert missing.status_code == 422

    await set_status(gateway, created["id"], PrebookingStatus.PREPARED)
    prepared = await gateway.client.patch(url, json={"execute_at": in_hours(60).isoformat()}, headers=bearer(key))
    assert prepared.status_code == 409
    assert "is prepared" in prepared.json()["detail"]
    shown = await gateway.client.get(url, headers=bearer(key))
    assert shown.json()["execute_at_ms"] == created["execute_at_ms"]


async def test_concurrent_duplicates_create_one(gateway: Gateway) -> None:
    key = await user_key(gateway)
    body = class_body(class_time="09:00")

    responses = await asyncio.gather(
        *(gateway.client.post("/v1/prebookings", json=body, headers=bearer(key)) for _ in range(5))
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201, 409, 409, 409, 409]
    created_id = next(response.json()["id"] for response in responses if response.status_code == 201)
    assert {response.json()["existing_id"] for response in responses if response.status_code == 409} == {created_id}
    listed = (await gateway.client.get("/v1/prebookings", headers=bearer(key))).json()
    assert listed["total"] == 1
