"""POST /api/login and /api/tokenUpdate, and the sessions they create."""

from __future__ import annotations

import time

import httpx

HOUR_MS = 60 * 60 * 1000
USERNAME = "carla@example.com"
PASSWORD = "s3cret-pass"
FINGERPRINT = "fp-1234"


async def register(sim) -> None:
    response = await sim.client.post("/_sim/users", json={"username": USERNAME, "password": PASSWORD})
    assert response.status_code == 201, response.text


async def login(sim) -> httpx.Response:
    body = {"username": USERNAME, "password": PASSWORD, "fingerprint": FINGERPRINT}
    return await sim.client.post("/api/login", json=body)


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Return the cookies set by ``response``: name to the full Set-Cookie value."""
    cookies = {}
    for header in response.headers.get_list("set-cookie"):
        name = header.split("=", 1)[0]
        cookies[name] = header

    return cookies


def cookie_value(response: httpx.Response, name: str) -> str:
    return set_cookies(response)[name].split("=", 1)[1].split(";", 1)[0]


async def test_login_sets_cookies(sim):
    await register(sim)

    response = await login(sim)

    assert response.status_code == 200
    cookies = set_cookies(response)
    assert set(cookies) >= {"amhrdrauth", "AWSALB", "PHPSESSID"}
    assert cookies["amhrdrauth"].endswith("; Path=/")
    answer = response.json()
    assert answer["fingerprint"] == FINGERPRINT
    assert len(answer["token"]) > 0


async def test_login_cookie_books(sim):
    await register(sim)
    await sim.add_class()
    cookie = cookie_value(await login(sim), "amhrdrauth")

    answer = (await sim.book(cookie)).json()

    assert answer["bookState"] == 1
    bookings = (await sim.client.get("/_sim/bookings")).json()["bookings"]
    assert bookings[0]["user"] == USERNAME


async def test_login_twice_new_cookie(sim):
    await register(sim)

    first = cookie_value(await login(sim), "amhrdrauth")
    second = cookie_value(await login(sim), "amhrdrauth")

    assert first != second


async def test_login_wrong_password(sim):
    await register(sim)

    body = {"username": USERNAME, "password": "wrong", "fingerprint": FINGERPRINT}
    response = await sim.client.post("/api/login", json=body)

    assert response.status_code == 200
    assert response.json() == {
        "errorMssg": "Usuario o contraseña incorrectos",
        "errorMssgLang": "ERROR_LOGIN_INCORRECTO",
    }
    assert set_cookies(response) == {}


async def test_login_unknown_user(sim):
    body = {"username": "nobody@example.com", "password": PASSWORD, "fingerprint": FINGERPRINT}
    response = await sim.client.post("/api/login", json=body)

    assert response.json()["errorMssgLang"] == "ERROR_LOGIN_INCORRECTO"


async def test_login_missing_password(sim):
    response = await sim.client.post("/api/login", json={"username": USERNAME})

    assert response.status_code == 400
    assert "field 'password'" in response.json()["error"]


async def test_login_body_not_json(sim):
    response = await sim.client.post("/api/login", content=b"username=x", headers={"content-type": "text/plain"})

    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


async def test_token_update_rotates_cookie(sim):
    await register(sim)
    await sim.add_class()
    logged_in = await login(sim)
    old_cookie = cookie_value(logged_in, "amhrdrauth")
    token = logged_in.json()["token"]

    body = {"token": token, "fingerprint": FINGERPRINT}
    refreshed = await sim.client.post("/api/tokenUpdate", json=body)

    assert refreshed.status_code == 200
    assert refreshed.json() == {"token": token}
    new_cookie = cookie_value(refreshed, "amhrdrauth")
    assert new_cookie != old_cookie
    assert (await sim.book(old_cookie)).json() == {"logout": 1}
    assert (await sim.book(new_cookie)).json()["bookState"] == 1


async def test_token_update_accepts_form(sim):
    await register(sim)
    token = (await login(sim)).json()["token"]

    form = {"token": token, "fingerprint": FINGERPRINT}
    refreshed = await sim.client.post("/api/tokenUpdate", data=form)

    assert refreshed.json() == {"token": token}
    assert "amhrdrauth" in set_cookies(refreshed)


async def test_token_update_extends_expiry(sim):
    now_ms = time.time_ns() // 1_000_000
    await sim.add_class()
    await sim.add_session(token="token-ana", expires_at_ms=now_ms + HOUR_MS)
    await sim.configure(session_ttl_ms=3 * HOUR_MS, clock_offset_ms=HOUR_MS // 2)

    refreshed = await sim.client.post("/api/tokenUpdate", json={"token": "token-ana"})
    new_cookie = cookie_value(refreshed, "amhrdrauth")
    await sim.configure(clock_offset_ms=2 * HOUR_MS)
    answer = (await sim.book(new_cookie)).json()

    assert answer["bookState"] == 1


async def test_token_update_unknown_token(sim):
    response = await sim.client.post("/api/tokenUpdate", json={"token": "nope", "fingerprint": FINGERPRINT})

    assert response.status_code == 200
    assert response.json() == {"logout": 1}
    assert set_cookies(response) == {}


async def test_token_update_expired_session(sim):
    now_ms = time.time_ns() // 1_000_000
    await sim.add_session(token="token-ana", expires_at_ms=now_ms - 1000)

    response = await sim.client.post("/api/tokenUpdate", json={"token": "token-ana"})

    assert response.json() == {"logout": 1}


async def test_token_update_other_fingerprint(sim):
    await register(sim)
    token = (await login(sim)).json()["token"]

    response = await sim.client.post("/api/tokenUpdate", json={"token": token, "fingerprint": "another"})

    assert response.json() == {"logout": 1}


async def test_token_update_revoked_session(sim):
    session = await sim.add_session(token="token-ana")

    await sim.client.delete(f"/_sim/sessions/{session['cookie']}")
    response = await sim.client.post("/api/tokenUpdate", json={"token": "token-ana"})

    assert response.json() == {"logout": 1}


async def test_token_update_missing_token(sim):
    response = await sim.client.post("/api/tokenUpdate", json={"fingerprint": FINGERPRINT})

    assert response.status_code == 400
    assert "field 'token'" in response.json()["error"]
