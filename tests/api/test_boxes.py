"""``/v1/boxes``: the admin key writes boxes, every key reads them."""

from __future__ import annotations

import pytest

from api.conftest import ADMIN_KEY, Gateway, bearer


async def test_put_box_creates_then_replaces(gateway: Gateway) -> None:
    body = {"aimharder_id": 4242, "timezone": "Atlantic/Canary", "window_hours": 48}
    created = await gateway.client.put("/v1/boxes/crossfitsur", json=body, headers=bearer(ADMIN_KEY))
    assert created.status_code == 201, created.text
    assert created.json()["aimharder_id"] == "4242"
    assert created.json()["timezone"] == "Atlantic/Canary"
    assert created.json()["window_hours"] == 48
    assert created.json()["window_days"] is None

    replaced = await gateway.client.put(
        "/v1/boxes/crossfitsur", json={"aimharder_id": "4243", "window_days": 3}, headers=bearer(ADMIN_KEY)
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["aimharder_id"] == "4243"
    assert replaced.json()["timezone"] == "Europe/Madrid"
    assert replaced.json()["window_days"] == 3
    assert replaced.json()["window_hours"] is None
    assert replaced.json()["created_at"] == created.json()["created_at"]


async def test_any_key_reads_boxes(gateway: Gateway) -> None:
    await gateway.put_box("boxb", window_days=2)
    await gateway.put_box("boxa", timezone="America/Mexico_City", window_hours=12)
    key = await gateway.create_user_key("ana@example.com")

    for reader in (key, ADMIN_KEY):
        listed = await gateway.client.get("/v1/boxes", headers=bearer(reader))
        assert listed.status_code == 200
        assert [box["subdomain"] for box in listed.json()] == ["boxa", "boxb"]
        assert listed.json()[0]["timezone"] == "America/Mexico_City"

    fetched = await gateway.client.get("/v1/boxes/boxb", headers=bearer(key))
    assert fetched.json()["window_days"] == 2
    missing = await gateway.client.get("/v1/boxes/nobox", headers=bearer(key))
    assert missing.status_code == 404
    assert "'nobox'" in missing.json()["detail"]


async def test_user_key_cannot_write_box(gateway: Gateway) -> None:
    key = await gateway.create_user_key("ana@example.com")
    response = await gateway.client.put(
        "/v1/boxes/boxa", json={"aimharder_id": "1", "window_days": 4}, headers=bearer(key)
    )
    assert response.status_code == 403
    listed = await gateway.client.get("/v1/boxes", headers=bearer(key))
    assert listed.json() == []


@pytest.mark.parametrize(
    ("subdomain", "body", "named"),
    [
        ("boxa", {"aimharder_id": "1", "timezone": "Europe/Atlantis", "window_days": 4}, "'Europe/Atlantis'"),
        ("boxa", {"aimharder_id": "1", "window_days": 4, "window_hours": 5}, "window_hours (5)"),
        ("boxa", {"aimharder_id": "1"}, "window_days or window_hours"),
        ("boxa", {"aimharder_id": "1", "window_days": 0}, "(got 0)"),
        ("boxa", {"aimharder_id": "1 2", "window_days": 4}, "'1 2'"),
        ("boxa", {"window_days": 4}, "aimharder_id is missing"),
        ("boxa", {"aimharder_id": "1", "window_days": 4, "windowDays": 4}, "windowDays"),
        ("Box_A", {"aimharder_id": "1", "window_days": 4}, "'Box_A'"),
    ],
    ids=["zone", "both-windows", "no-window", "zero-days", "bad-id", "missing-id", "unknown-field", "bad-subdomain"],
)
async def test_put_box_rejects_invalid(gateway: Gateway, subdomain: str, body: dict, named: str) -> None:
    response = await gateway.client.put(f"/v1/boxes/{subdomain}", json=body, headers=bearer(ADMIN_KEY))
    assert response.status_code == 422, response.text
    assert named in response.json()["detail"]
