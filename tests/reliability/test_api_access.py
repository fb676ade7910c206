"""Two users on a running gateway: neither reaches the other's prebookings, session or keys.

Every route of the OpenAPI document is tried with one user's key on the other user's
resources, with bodies that would be valid for their owner, so a rejection comes
from the ownership check and not from validation. The tests in tests/api/test_access.py
cover missing, malformed, unknown and revoked keys and the log lines they cause.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from reliability.conftest import DeploymentFactory
from reliability.services import ADMIN_KEY, CLASS_DAY

pytestmark = pytest.mark.timeout(180)

ANA = "ana@example.com"
BEA = "bea@example.com"
BOX = "accessbox"


def _future(hours: int) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


async def test_users_cannot_touch_each_other(start: DeploymentFactory) -> None:
    deployment = await start()
    ana_key = await deployment.create_user_key(ANA)
    bea_key = await deployment.create_user_key(BEA)
    ana = {"Authorization": f"Bearer {ana_key}"}
    bea = {"Authorization": f"Bearer {bea_key}"}
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    prebooking_body = {"box": BOX, "class_id": "901", "class_day": CLASS_DAY.isoformat(), "execute_at": _future(48)}

    async with deployment.gateway_client() as gateway:
        box = await gateway.put(f"/v1/boxes/{BOX}", json={"aimharder_id": "4242", "window_days": 4}, headers=admin)
        assert box.status_code == 201, box.text
        created = await gateway.post("/v1/prebookings", json=prebooking_body, headers=ana)
        assert created.status_code == 201, created.text
        ana_prebooking = created.json()
        stored = await gateway.put(f"/v1/sessions/{ANA}", json={"cookies": {"amhrdrauth": "ana-cookie"}}, headers=ana)
        assert stored.status_code == 201, stored.text
        ana_key_id = (await gateway.get("/v1/me", headers=ana)).json()["key"]["id"]

        path_values = {
            "prebooking_id": ana_prebooking["id"],
            "user_email": ANA,
            "email": ANA,
            "key_id": ana_key_id,
            "subdomain": BOX,
        }
        # Method and path template -> (body, the status Bea's key must get).
        expected = {
            ("POST", "/v1/prebookings"): ({**prebooking_body, "class_id": "902", "user_email": ANA}, 403),
            ("GET", "/v1/prebookings/{prebooking_id}"): (None, 404),
            ("PATCH", "/v1/prebookings/{prebooking_id}"): ({"execute_at": _future(72)}, 404),
            ("DELETE", "/v1/prebookings/{prebooking_id}"): (None, 404),
            ("PUT", "/v1/sessions/{user_email}"): ({"cookies": {"amhrdrauth": "bea-cookie"}}, 403),
            ("GET", "/v1/sessions/{user_email}"): (None, 403),
            ("DELETE", "/v1/sessions/{user_email}"): (None, 403),
            ("POST", "/v1/sessions/{user_email}/login"): ({"username": ANA, "password": "guess"}, 403),
            ("DELETE", "/v1/keys/{key_id}"): (None, 404),
            ("POST", "/v1/users"): ({"email": "carla@example.com"}, 403),
            ("POST", "/v1/users/{email}/keys"): ({}, 403),
            ("GET", "/v1/users/{email}/keys"): (None, 403),
            ("PUT", "/v1/boxes/{subdomain}"): ({"aimharder_id": "1", "window_days": 1}, 403),
            # Bea has no AimHarder session, and booking never borrows Ana's.
            ("POST", "/v1/bookings"): ({"box": BOX, "class_id": "901", "class_day": CLASS_DAY.isoformat()}, 424),
            # Routes that show only Bea's own data or shared configuration.
            ("GET", "/v1/prebookings"): (None, 200),
            ("GET", "/v1/me"): (None, 200),
            ("GET", "/v1/boxes"): (None, 200),
            ("GET", "/v1/boxes/{subdomain}"): (None, 200),
        }

        spec = (await gateway.get("/openapi.json")).json()
        routes = {
            (method.upper(), path)
            for path, operations in spec["paths"].items()
            if path.startswith("/v1/") and not path.startswith("/v1/qstash/")
            for method in operations
        }
        assert routes == set(expected), "a route was added or removed: list it here with the status another user gets"

        answers = {}
        for (method, template), (body, _) in expected.items():
            path = re.sub(r"\{(\w+)\}", lambda match: path_values[match[1]], template)
            answers[(method, template)] = await gateway.request(method, path, json=body, headers=bea)

        listed = answers[("GET", "/v1/prebookings")].json()
        ana_view = await gateway.get(f"/v1/prebookings/{ana_prebooking['id']}", headers=ana)
        ana_session = await gateway.get(f"/v1/sessions/{ANA}", headers=ana)
        ana_me = await gateway.get("/v1/me", headers=ana)

    for route, (_, status) in expected.items():
        assert answers[route].status_code == status, (route, answers[route].text)
    assert listed["total"] == 0
    assert answers[("GET", "/v1/me")].json()["user_email"] == BEA
    assert ana_view.status_code == 200
    assert ana_view.json()["status"] == ana_prebooking["status"]
    assert ana_view.json()["execute_at"] == ana_prebooking["execute_at"]
    assert ana_session.status_code == 200
    assert ana_me.status_code == 200
    assert await deployment.book_requests() == []

    log = deployment.gateway.logs_since_start()
    for key in (ana_key, bea_key, ADMIN_KEY):
        assert key not in log
        assert key[4:16] not in log
