"""Sessions at rest: encryption, key rotation with `prebook sessions reencrypt`, refresh claims."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet

from prebook_common.aimharder_login import SessionGrant
from prebook_common.aimharder_sessions import Credentials, SessionRepository, SessionState, session_state, validate_cookies
from prebook_common.crypto import DecryptionError, SecretBox
from sessions.conftest import PASSWORD, USER, raw_session_row

COOKIES = {"amhrdrauth": "amhrdrauth-value-5f0c1e9a", "PHPSESSID": "phpsessid-value-77b2", "AWSALB": "awsalb-value-c3d9"}
TOKEN = "token-value-0b8e4a7d3c2f"


async def _store_full_session(repository: SessionRepository) -> None:
    await repository.put(
        USER, cookies=COOKIES, token=TOKEN, fingerprint="fp-1", credentials=Credentials("ana-login", PASSWORD)
    )


async def test_secrets_unreadable_in_raw_row(engine, repository: SessionRepository) -> None:
    await _store_full_session(repository)

    raw = await raw_session_row(engine, USER)

    for value in COOKIES.values():
        assert value not in raw
    assert TOKEN not in raw
    assert PASSWORD not in raw
    assert "amhrdrauth" not in raw
    assert "ana-login" in raw


async def test_secrets_decrypt_to_stored_values(repository: SessionRepository) -> None:
    await _store_full_session(repository)

    _, secrets = await repository.load(USER)

    assert secrets.cookies == COOKIES
    assert secrets.token == TOKEN
    assert secrets.credentials == Credentials("ana-login", PASSWORD)
    assert secrets.fingerprint == "fp-1"


async def test_secrets_repr_hides_values(repository: SessionRepository) -> None:
    await _store_full_session(repository)

    _, secrets = await repository.load(USER)
    shown = repr(secrets)

    assert COOKIES["amhrdrauth"] not in shown
    assert TOKEN not in shown
    assert PASSWORD not in shown


async def test_put_without_credentials_keeps_stored_ones(repository: SessionRepository) -> None:
    await _store_full_session(repository)

    row, created = await repository.put(USER, cookies={"amhrdrauth": "second-cookie-value"}, token=None, fingerprint=None)
    _, secrets = await repository.load(USER)

    assert created is False
    assert row.auto_relogin is True
    assert secrets.credentials == Credentials("ana-login", PASSWORD)
    assert secrets.token is None


async def test_put_with_none_removes_credentials(engine, repository: SessionRepository) -> None:
    await _store_full_session(repository)

    row, _ = await repository.put(USER, cookies=COOKIES, token=None, fingerprint=None, credentials=None)

    assert row.auto_relogin is False
    assert row.username is None
    assert row.password_encrypted is None


async def test_claim_lost_after_user_put(repository: SessionRepository) -> None:
    await _store_full_session(repository)
    row = await repository.get(USER)
    claimed_at = await repository.claim(row)
    assert claimed_at is not None

    await repository.put(USER, cookies={"amhrdrauth": "cookie-from-the-user"}, token=None, fingerprint=None)
    stored = await repository.store_grant(USER, claimed_at, SessionGrant({"amhrdrauth": "refreshed"}, "t2"), fingerprint=None)
    _, secrets = await repository.load(USER)

    assert stored is False
    assert secrets.cookies == {"amhrdrauth": "cookie-from-the-user"}


async def test_second_claim_of_same_read_fails(repository: SessionRepository) -> None:
    await _store_full_session(repository)
    row = await repository.get(USER)

    first = await repository.claim(row)
    second = await repository.claim(row)

    assert first is not None
    assert second is None


async def test_failure_marks_session_expired(repository: SessionRepository) -> None:
    await _store_full_session(repository)
    claimed_at = await repository.claim(await repository.get(USER))

    await repository.store_failure(USER, claimed_at, "token update: logged out", expired=True)
    row = await repository.get(USER)

    assert row.refresh_failures == 1
    assert row.last_error == "token update: logged out"
    assert session_state(row, max_age_s=3600) is SessionState.EXPIRED


@pytest.mark.parametrize(
    "cookies",
    [
        {"PHPSESSID": "x"},
        {"amhrdrauth": ""},
        {"amhrdrauth": "a;b"},
        {"amhrdrauth": "a\r\nX-Injected: 1"},
        {"amhrdrauth": "ok", "bad name": "x"},
        {"amhrdrauth": 5},
    ],
    ids=["missing", "empty", "semicolon", "header-injection", "bad-name", "not-a-string"],
)
def test_validate_cookies_rejects(cookies: dict) -> None:
    with pytest.raises(ValueError):
        validate_cookies(cookies)


def _reencrypt(database_url: str, keys: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
        "PREBOOK_ENV": "development",
        "PREBOOK_DATABASE_URL": database_url,
        "PREBOOK_SESSION_ENCRYPTION_KEYS": keys,
    }
    return subprocess.run(
        [sys.executable, "-m", "prebook.cli", "sessions", "reencrypt"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )


async def test_key_rotation_with_reencrypt(engine, database_url: str) -> None:
    old_key = Fernet.generate_key().decode()
    new_key = Fernet.generate_key().decode()
    await SessionRepository(engine, SecretBox(old_key)).put(
        USER, cookies=COOKIES, token=TOKEN, fingerprint=None, credentials=Credentials("ana-login", PASSWORD)
    )
    await SessionRepository(engine, SecretBox(old_key)).put(
        "bea@example.com", cookies={"amhrdrauth": "bea-cookie-value"}, token=None, fingerprint=None
    )

    # Step 1: the new key first, the old one after it; old data stays readable.
    _, before = await SessionRepository(engine, SecretBox(f"{new_key},{old_key}")).load(USER)
    assert before.cookies == COOKIES

    # Step 2: re-encrypt with the new key.
    result = await asyncio.to_thread(_reencrypt, database_url, f"{new_key},{old_key}")
    assert result.returncode == 0, result.stderr
    assert "re-encrypted 4 secrets of 2 sessions" in result.stdout

    # Step 3: the new key alone reads everything; the old key alone reads nothing.
    new_only = SessionRepository(engine, SecretBox(new_key))
    _, after = await new_only.load(USER)
    _, other = await new_only.load("bea@example.com")
    assert after.cookies == COOKIES
    assert after.token == TOKEN
    assert after.credentials == Credentials("ana-login", PASSWORD)
    assert other.cookies == {"amhrdrauth": "bea-cookie-value"}
    with pytest.raises(DecryptionError):
        await SessionRepository(engine, SecretBox(old_key)).load(USER)


async def test_reencrypt_without_old_key_fails(engine, database_url: str) -> None:
    old_key = Fernet.generate_key().decode()
    await SessionRepository(engine, SecretBox(old_key)).put(USER, cookies=COOKIES, token=TOKEN, fingerprint=None)

    result = await asyncio.to_thread(_reencrypt, database_url, Fernet.generate_key().decode())

    assert result.returncode == 1
    assert "cannot be decrypted" in result.stderr
    assert COOKIES["amhrdrauth"] not in result.stderr + result.stdout
