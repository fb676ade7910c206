"""The /v1/sessions routes on the real gateway app (in-process ASGI), a real database and NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from prebook_common.db import session_factory
from prebook_common.settings import Settings
from prebook_gateway.app import create_app
from prebook_gateway.keys import ensure_user, issue_key
from prebook_simulator import SimulatorServer
from sessions.conftest import (
    AIMHARDER_USERNAME,
    PASSWORD,
    USER,
    assert_no_secret,
    capture_prebook_logs,
    raw_session_row,
    sim_secrets,
)
from support.jetstream import NatsNames

OTHER_USER = "bea@example.com"
COOKIES = {"amhrdrauth": "api-cookie-value-4d1f9e", "PHPSESSID": "api-phpsessid-value-8a2c"}
TOKEN = "api-token-value-77c0d1e2"
SECRET_WORDS = (*COOKIES.values(), TOKEN, PASSWORD)


@dataclass
class Api:
    client: httpx.AsyncClient
    engine: object

    def headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def api(
    database_url: str,
    nats_url: str,
    nats_names: NatsNames,
    simulator: SimulatorServer,
    sim: httpx.AsyncClient,
    encryption_key: str,
    engine,
) -> AsyncIterator[Api]:
    """The gateway app with its lifespan running; the simulator has the user's AimHarder login."""
    settings = Settings(
        env="development",
        database_url=database_url,
        nats_url=nats_url,
        nats_stream=nats_names.stream,
        nats_subject_prefix=nats_names.subject_prefix,
        aimharder_login_url=simulator.url,
        aimharder_base_url=simulator.url,
        session_encryption_keys=encryption_key,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield Api(client, engine)


async def _user_key(engine, email: str) -> str:
    async with session_factory(engine)() as session:
        await ensure_user(session, email)
        issued = await issue_key(session, email, name="sessions test")
        await session.commit()
    return issued.key


@pytest.fixture
async def ana_key(api: Api) -> str:
    return await _user_key(api.engine, USER)


@pytest.fixture
async def bea_key(api: Api) -> str:
    return await _user_key(api.engine, OTHER_USER)


async def _put(api: Api, key: str, email: str = USER, **body) -> httpx.Response:
    body = body or {"cookies": COOKIES, "token": TOKEN, "fingerprint": "fp-api"}
    return await api.client.put(f"/v1/sessions/{email}", json=body, headers=api.headers(key))


async def _login(api: Api, key: str, *, password: str = PASSWORD, remember: bool = True, email: str = USER) -> httpx.Response:
    body = {"username": AIMHARDER_USERNAME, "password": password, "remember_credentials": remember}
    return await api.client.post(f"/v1/sessions/{email}/login", json=body, headers=api.headers(key))


def _assert_no_secret_words(response: httpx.Response) -> None:
    assert_no_secret([(f"response to {response.request.method} {response.request.url.path}", response.text)], SECRET_WORDS)


async def test_put_creates_then_replaces(api: Api, ana_key: str) -> None:
    first = await _put(api, ana_key)
    second = await _put(api, ana_key)

    assert first.status_code == 201, first.text
    assert second.status_code == 200, second.text
    body = second.json()
    assert body["user_email"] == USER
    assert body["state"] == "valid"
    assert body["token_stored"] is True
    assert body["credentials_stored"] is False
    assert body["refresh_failures"] == 0
    _assert_no_secret_words(first)
    _assert_no_secret_words(second)


async def test_put_stores_encrypted(api: Api, ana_key: str) -> None:
    await _put(api, ana_key)

    raw = await raw_session_row(api.engine, USER)

    assert_no_secret([("raw database row", raw)], SECRET_WORDS)


async def test_put_without_amhrdrauth_rejected(api: Api, ana_key: str) -> None:
    response = await _put(api, ana_key, cookies={"PHPSESSID": "api-phpsessid-value-8a2c"})

    assert response.status_code == 422
    assert response.json()["field"] == "cookies"
    assert "amhrdrauth" in response.json()["detail"]
    _assert_no_secret_words(response)


async def test_put_invalid_cookie_not_echoed(api: Api, ana_key: str) -> None:
    response = await _put(api, ana_key, cookies={"amhrdrauth": "api-cookie-value-4d1f9e;\r\nX-Evil: 1"})

    assert response.status_code == 422
    assert "amhrdrauth" in response.json()["detail"]
    _assert_no_secret_words(response)


async def test_put_token_wrong_type_not_echoed(api: Api, ana_key: str) -> None:
    response = await _put(api, ana_key, cookies=COOKIES, token=["api-token-value-77c0d1e2"])

    assert response.status_code == 422
    assert response.json()["field"] == "token"
    _assert_no_secret_words(response)


async def test_get_shows_age_never_secrets(api: Api, ana_key: str, sim: httpx.AsyncClient) -> None:
    login = await _login(api, ana_key)
    response = await api.client.get(f"/v1/sessions/{USER}", headers=api.headers(ana_key))

    assert login.status_code == 201, login.text
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "valid"
    assert body["credentials_stored"] is True
    assert body["aimharder_username"] == AIMHARDER_USERNAME
    assert body["age_s"] >= 0
    assert body["refreshed_at"]
    assert set(body) >= {"expires_at", "refresh_failures", "last_error", "token_stored"}
    secrets = await sim_secrets(sim) | {PASSWORD}
    assert_no_secret([("GET response", response.text), ("login response", login.text)], secrets)


async def test_get_missing_session_404(api: Api, ana_key: str) -> None:
    response = await api.client.get(f"/v1/sessions/{USER}", headers=api.headers(ana_key))

    assert response.status_code == 404
    assert f"PUT /v1/sessions/{USER}" in response.json()["detail"]


async def test_delete_then_missing(api: Api, ana_key: str) -> None:
    await _put(api, ana_key)

    deleted = await api.client.delete(f"/v1/sessions/{USER}", headers=api.headers(ana_key))
    again = await api.client.delete(f"/v1/sessions/{USER}", headers=api.headers(ana_key))
    get = await api.client.get(f"/v1/sessions/{USER}", headers=api.headers(ana_key))

    assert deleted.status_code == 204
    assert deleted.content == b""
    assert again.status_code == 404
    assert get.status_code == 404


async def test_login_stores_session(api: Api, ana_key: str, sim: httpx.AsyncClient) -> None:
    response = await _login(api, ana_key)
    raw = await raw_session_row(api.engine, USER)

    assert response.status_code == 201, response.text
    assert response.json()["token_stored"] is True
    assert_no_secret([("raw database row", raw)], await sim_secrets(sim) | {PASSWORD})


async def test_login_without_remember(api: Api, ana_key: str) -> None:
    await _login(api, ana_key, remember=True)

    response = await _login(api, ana_key, remember=False)

    assert response.status_code == 200, response.text
    assert response.json()["credentials_stored"] is False
    assert response.json()["aimharder_username"] is None


async def test_login_wrong_password_422(api: Api, ana_key: str, sim: httpx.AsyncClient) -> None:
    response = await _login(api, ana_key, password="wrong-password-9c1e")
    get = await api.client.get(f"/v1/sessions/{USER}", headers=api.headers(ana_key))

    assert response.status_code == 422
    assert response.json()["error"] == "login rejected"
    assert "wrong username or password" in response.json()["detail"]
    assert "wrong-password-9c1e" not in response.text
    assert get.status_code == 404


async def test_login_password_wrong_type_not_echoed(api: Api, ana_key: str) -> None:
    body = {"username": AIMHARDER_USERNAME, "password": 98765432109876, "remember_credentials": True}
    response = await api.client.post(f"/v1/sessions/{USER}/login", json=body, headers=api.headers(ana_key))

    assert response.status_code == 422
    assert response.json()["field"] == "password"
    assert "98765432109876" not in response.text


async def test_login_missing_password_422(api: Api, ana_key: str) -> None:
    body = {"username": AIMHARDER_USERNAME}
    response = await api.client.post(f"/v1/sessions/{USER}/login", json=body, headers=api.headers(ana_key))

    assert response.status_code == 422
    assert response.json()["detail"] == "field password: is missing: add it to the request"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "LOGIN"])
async def test_other_user_key_forbidden(api: Api, ana_key: str, bea_key: str, method: str) -> None:
    await _put(api, ana_key)

    if method == "PUT":
        response = await _put(api, bea_key, email=USER, cookies={"amhrdrauth": "bea-replacement-cookie"})
    elif method == "LOGIN":
        response = await _login(api, bea_key, email=USER)
    else:
        response = await api.client.request(method, f"/v1/sessions/{USER}", headers=api.headers(bea_key))
    own = await api.client.get(f"/v1/sessions/{USER}", headers=api.headers(ana_key))

    assert response.status_code == 403
    assert OTHER_USER in response.json()["detail"]
    _assert_no_secret_words(response)
    assert own.status_code == 200
    assert own.json()["token_stored"] is True


async def test_missing_key_401(api: Api) -> None:
    response = await api.client.get(f"/v1/sessions/{USER}")

    assert response.status_code == 401


async def test_email_in_path_normalized(api: Api, ana_key: str) -> None:
    response = await _put(api, ana_key, email="Ana@Example.com")

    assert response.status_code == 201
    assert response.json()["user_email"] == USER


async def test_api_logs_no_secret(api: Api, ana_key: str, sim: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    capture_prebook_logs(caplog)

    await _put(api, ana_key)
    await _login(api, ana_key)
    await _login(api, ana_key, password="wrong-password-9c1e")
    await api.client.get(f"/v1/sessions/{USER}", headers=api.headers(ana_key))

    assert "AimHarder session of ana@example.com stored after a login" in caplog.text
    secrets = await sim_secrets(sim) | set(SECRET_WORDS) | {"wrong-password-9c1e"}
    assert_no_secret([("caplog", caplog.text)], secrets)
