"""API keys on every REST route: 401 for bad keys, 403 for the wrong role, 404 across users."""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from api.conftest import ADMIN_KEY, Gateway, GatewayFactory, bearer
from prebook_common.log import QUIET_LOGGERS
from prebook_gateway.keys import KEY_PATTERN

PATH_VALUES = {
    "email": "nobody@example.com",
    "user_email": "nobody@example.com",
    "subdomain": "somebox",
    "prebooking_id": str(uuid.uuid4()),
    "key_id": str(uuid.uuid4()),
}


def rest_routes(gateway: Gateway) -> list[tuple[str, str]]:
    """Every method and path of the REST API, from the OpenAPI document, with sample ids."""
    calls = []
    for path, operations in gateway.app.openapi()["paths"].items():
        if not path.startswith("/v1/") or path.startswith("/v1/qstash/"):
            continue
        concrete = re.sub(r"\{(\w+)\}", lambda match: PATH_VALUES[match[1]], path)
        calls.extend((method.upper(), concrete) for method in operations)
    return calls


def future(hours: int = 48) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def assert_unauthorized(response, reason: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    body = response.json()
    assert body["error"] == "unauthorized"
    assert reason in body["detail"]


async def test_routes_reject_missing_key(gateway: Gateway) -> None:
    calls = rest_routes(gateway)
    assert ("POST", "/v1/prebookings") in calls
    assert ("POST", "/v1/bookings") in calls
    assert len(calls) >= 13

    for method, path in calls:
        response = await gateway.client.request(method, path, json={})
        assert_unauthorized(response, "missing API key")


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        ("Basic dXNlcjpwYXNz", "malformed Authorization header"),
        ("Bearer", "malformed Authorization header"),
        ("Bearer not-a-prebook-key", "malformed API key"),
        ("Bearer pbk_" + "A" * 43, "invalid API key"),
    ],
    ids=["basic", "empty-bearer", "malformed", "unknown"],
)
async def test_routes_reject_bad_key(gateway: Gateway, authorization: str, reason: str) -> None:
    for method, path in rest_routes(gateway):
        response = await gateway.client.request(method, path, json={}, headers={"Authorization": authorization})
        assert_unauthorized(response, reason)


async def test_revoked_key_rejected(gateway: Gateway) -> None:
    key = await gateway.create_user_key("ana@example.com")
    me = await gateway.client.get("/v1/me", headers=bearer(key))
    assert me.status_code == 200
    key_id = me.json()["key"]["id"]

    revoked = await gateway.client.delete(f"/v1/keys/{key_id}", headers=bearer(ADMIN_KEY))
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None

    for method, path in rest_routes(gateway):
        response = await gateway.client.request(method, path, json={}, headers=bearer(key))
        assert_unauthorized(response, "revoked API key")


async def test_user_revokes_own_key_only(gateway: Gateway) -> None:
    ana = await gateway.create_user_key("ana@example.com")
    ana_second = await gateway.create_user_key("ana@example.com", name="laptop")
    bea = await gateway.create_user_key("bea@example.com")
    ana_second_id = (await gateway.client.get("/v1/me", headers=bearer(ana_second))).json()["key"]["id"]

    by_bea = await gateway.client.delete(f"/v1/keys/{ana_second_id}", headers=bearer(bea))
    assert by_bea.status_code == 404
    still_valid = await gateway.client.get("/v1/me", headers=bearer(ana_second))
    assert still_valid.status_code == 200

    by_ana = await gateway.client.delete(f"/v1/keys/{ana_second_id}", headers=bearer(ana))
    assert by_ana.status_code == 200
    now_revoked = await gateway.client.get("/v1/me", headers=bearer(ana_second))
    assert now_revoked.status_code == 401


async def test_rejections_log_no_key_material(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    # The levels that setup_logging gives a service at DEBUG. The database drivers stay
    # at WARNING because their DEBUG lines contain query parameters, such as key hashes.
    caplog.set_level(logging.DEBUG)
    for name in QUIET_LOGGERS:
        caplog.set_level(logging.WARNING, logger=name)
    valid = await gateway.create_user_key("ana@example.com")
    unknown = "pbk_" + "Z" * 43
    malformed = "pbk_short-secret-value"
    me = await gateway.client.get("/v1/me", headers=bearer(valid))
    await gateway.client.delete(f"/v1/keys/{me.json()['key']['id']}", headers=bearer(ADMIN_KEY))

    for key in (unknown, malformed, valid, ADMIN_KEY + "x"):
        response = await gateway.client.get("/v1/prebookings", headers=bearer(key))
        assert response.status_code == 401

    logged = caplog.text
    assert "rejected" in logged
    for key in (valid, unknown, malformed, ADMIN_KEY):
        assert key not in logged
        assert key[:12] not in logged
        assert key[4:12] not in logged
        assert hashlib.sha256(key.encode()).hexdigest() not in logged


async def test_rejections_logged_once_per_reason(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="prebook_gateway")
    for _ in range(3):
        response = await gateway.client.get("/v1/me", headers=bearer("pbk_" + "Y" * 43))
        assert response.status_code == 401
    response = await gateway.client.get("/v1/me")
    assert response.status_code == 401

    lines = [record.getMessage() for record in caplog.records if "rejected" in record.getMessage()]
    assert lines == [
        "request GET /v1/me rejected: unknown API key (0 more like it skipped in the last 10 s)",
        "request GET /v1/me rejected: no Authorization header (0 more like it skipped in the last 10 s)",
    ]


async def test_admin_creates_users_and_keys(gateway: Gateway) -> None:
    created = await gateway.client.post("/v1/users", json={"email": " Ana@Example.com "}, headers=bearer(ADMIN_KEY))
    assert created.status_code == 201, created.text
    assert created.json()["email"] == "ana@example.com"

    again = await gateway.client.post("/v1/users", json={"email": "ana@example.com"}, headers=bearer(ADMIN_KEY))
    assert again.status_code == 409
    assert "ana@example.com" in again.json()["detail"]

    invalid = await gateway.client.post("/v1/users", json={"email": "not an email"}, headers=bearer(ADMIN_KEY))
    assert invalid.status_code == 422
    assert "'not an email'" in invalid.json()["detail"]

    issued = await gateway.client.post(
        "/v1/users/ana@example.com/keys", json={"name": "phone"}, headers=bearer(ADMIN_KEY)
    )
    assert issued.status_code == 201, issued.text
    body = issued.json()
    assert KEY_PATTERN.fullmatch(body["key"])
    assert body["prefix"] == body["key"][:12]
    assert body["name"] == "phone"
    assert body["user_email"] == "ana@example.com"

    listed = await gateway.client.get("/v1/users/ana@example.com/keys", headers=bearer(ADMIN_KEY))
    assert [key["id"] for key in listed.json()] == [body["id"]]
    assert "key" not in listed.json()[0]

    unknown_user = await gateway.client.post("/v1/users/zoe@example.com/keys", json={}, headers=bearer(ADMIN_KEY))
    assert unknown_user.status_code == 404
    assert "zoe@example.com" in unknown_user.json()["detail"]


async def test_key_stored_only_as_hash(gateway: Gateway) -> None:
    key = await gateway.create_user_key("ana@example.com")
    async with gateway.state.engine.connect() as connection:
        from sqlalchemy import text

        rows = (await connection.execute(text("SELECT * FROM api_key"))).all()
    stored = " ".join(str(value) for row in rows for value in row)
    assert key not in stored
    assert hashlib.sha256(key.encode()).hexdigest() in stored


async def test_me_names_the_caller(gateway: Gateway) -> None:
    key = await gateway.create_user_key("ana@example.com", name="laptop")
    user = await gateway.client.get("/v1/me", headers=bearer(key))
    assert user.json()["admin"] is False
    assert user.json()["user_email"] == "ana@example.com"
    assert user.json()["key"]["name"] == "laptop"

    admin = await gateway.client.get("/v1/me", headers=bearer(ADMIN_KEY))
    assert admin.json() == {"admin": True, "user_email": None, "key": None}


async def test_user_key_cannot_use_admin_routes(gateway: Gateway) -> None:
    key = await gateway.create_user_key("ana@example.com")
    calls = [
        ("POST", "/v1/users", {"email": "bea@example.com"}),
        ("POST", "/v1/users/ana@example.com/keys", {}),
        ("GET", "/v1/users/ana@example.com/keys", None),
        ("PUT", "/v1/boxes/somebox", {"aimharder_id": "1", "window_days": 4}),
    ]
    for method, path, body in calls:
        response = await gateway.client.request(method, path, json=body, headers=bearer(key))
        assert response.status_code == 403, (method, path, response.text)
        assert "admin key" in response.json()["detail"]


async def test_admin_key_owns_no_prebookings(gateway: Gateway) -> None:
    await gateway.put_box("somebox")
    for method, path in [("GET", "/v1/prebookings"), ("POST", "/v1/prebookings"), ("POST", "/v1/bookings")]:
        response = await gateway.client.request(method, path, json={}, headers=bearer(ADMIN_KEY))
        assert response.status_code == 403, (method, path, response.text)
        assert "user key" in response.json()["detail"]


async def test_admin_routes_off_without_admin_key(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(admin_api_key=None)
    response = await gateway.client.post("/v1/users", json={"email": "ana@example.com"}, headers=bearer(ADMIN_KEY))
    assert_unauthorized(response, "malformed API key")


async def test_users_see_only_own_prebookings(gateway: Gateway) -> None:
    await gateway.put_box("somebox")
    ana = await gateway.create_user_key("ana@example.com")
    bea = await gateway.create_user_key("bea@example.com")
    body = {"box": "somebox", "class_id": "101", "class_day": "2030-01-10", "execute_at": future()}
    created = await gateway.client.post("/v1/prebookings", json=body, headers=bearer(ana))
    assert created.status_code == 201, created.text
    ana_id = created.json()["id"]

    seen_by_bea = await gateway.client.get(f"/v1/prebookings/{ana_id}", headers=bearer(bea))
    assert seen_by_bea.status_code == 404
    assert ana_id in seen_by_bea.json()["detail"]
    listed = await gateway.client.get("/v1/prebookings", headers=bearer(bea))
    assert listed.json()["total"] == 0
    cancelled = await gateway.client.delete(f"/v1/prebookings/{ana_id}", headers=bearer(bea))
    assert cancelled.status_code == 404
    patched = await gateway.client.patch(
        f"/v1/prebookings/{ana_id}", json={"execute_at": future(72)}, headers=bearer(bea)
    )
    assert patched.status_code == 404
    for_ana = await gateway.client.post(
        "/v1/prebookings", json={**body, "class_id": "102", "user_email": "ana@example.com"}, headers=bearer(bea)
    )
    assert for_ana.status_code == 403
    assert "ana@example.com" in for_ana.json()["detail"]

    unchanged = await gateway.client.get(f"/v1/prebookings/{ana_id}", headers=bearer(ana))
    assert unchanged.json()["status"] == "pending"
    assert unchanged.json()["execute_at"] == created.json()["execute_at"]
    assert (await gateway.client.get("/v1/prebookings", headers=bearer(ana))).json()["total"] == 1


async def test_callback_ignores_bearer_keys(gateway: Gateway) -> None:
    response = await gateway.client.post("/v1/qstash/prepare", content=b"{}", headers=bearer(ADMIN_KEY))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid signature"


async def test_openapi_declares_bearer(gateway: Gateway) -> None:
    spec = (await gateway.client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    assert spec["paths"]["/v1/prebookings"]["post"]["security"] == [{"ApiKey": []}]
    assert "security" not in spec["paths"]["/v1/qstash/prepare"]["post"]
    docs = await gateway.client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
