"""Error bodies keep one shape, and the OpenAPI document lists each route's error responses."""

from __future__ import annotations

import pytest

from api.conftest import ADMIN_KEY, Gateway, bearer

USER = "eva@example.com"


async def test_non_utf8_body_is_422(gateway: Gateway) -> None:
    key = await gateway.create_user_key(USER)

    response = await gateway.client.post(
        "/v1/prebookings",
        content=b'{"box": "\xff"}',
        headers={**bearer(key), "Content-Type": "application/json"},
    )

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid request"
    assert "UTF-8 JSON" in body["detail"]
    assert body["errors"] == [{"field": None, "message": body["detail"]}]


async def test_invalid_json_names_position(gateway: Gateway) -> None:
    key = await gateway.create_user_key(USER)

    response = await gateway.client.post(
        "/v1/prebookings", content=b'{"box": ', headers={**bearer(key), "Content-Type": "application/json"}
    )

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] is None
    assert body["detail"].startswith("body is not valid JSON at position 8: ")


async def test_unknown_path_keeps_error_shape(gateway: Gateway) -> None:
    missing = await gateway.client.get("/v1/no-such-route", headers=bearer(ADMIN_KEY))
    wrong_method = await gateway.client.put("/healthz")

    assert missing.status_code == 404
    assert missing.json() == {"error": "not found", "detail": "Not Found"}
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method not allowed"
    assert "GET" in wrong_method.headers["Allow"]


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("post", "/v1/prebookings", {"401", "403", "409", "413", "422"}),
        ("delete", "/v1/prebookings/{prebooking_id}", {"401", "403", "404", "409"}),
        ("post", "/v1/users", {"401", "403", "409", "413", "422"}),
        ("get", "/v1/boxes/{subdomain}", {"401", "404"}),
        ("post", "/v1/bookings", {"401", "403", "409", "424", "502"}),
        ("post", "/v1/sessions/{user_email}/login", {"401", "403", "413", "422", "502"}),
        ("post", "/v1/qstash/prepare", {"401", "413", "489", "503"}),
    ],
)
async def test_openapi_lists_error_responses(
    gateway: Gateway, method: str, path: str, statuses: set[str]
) -> None:
    document = gateway.app.openapi()

    responses = document["paths"][path][method]["responses"]

    assert statuses <= set(responses)
    for status in statuses:
        schema = responses[status]["content"]["application/json"]["schema"]
        expected = "ValidationErrorOut" if status == "422" else "ErrorOut"
        assert schema == {"$ref": f"#/components/schemas/{expected}"}, (path, status)
    assert {"error", "detail"} <= set(document["components"]["schemas"]["ErrorOut"]["required"])
