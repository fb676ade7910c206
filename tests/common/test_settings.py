"""Tests of Settings: PREBOOK_ variables, masked secrets and the placeholder check."""

from __future__ import annotations

import pytest

from prebook_common.errors import ConfigurationError
from prebook_common.settings import Settings

# Values that look like real secrets: random enough and without the placeholder mark.
REAL_SECRETS = {
    "PREBOOK_TOKEN_SECRET": "3f9c1e7a5b2d4c6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e",
    "PREBOOK_QSTASH_CURRENT_SIGNING_KEY": "sig_7Yk2mQ9vR4tW1xZ8bN3cD6fG",
    "PREBOOK_QSTASH_NEXT_SIGNING_KEY": "sig_2Lp5sH8jK1nM4qT7vX0yB3eF",
    "PREBOOK_SESSION_ENCRYPTION_KEYS": "Zm9yLXRlc3RzLW9ubHktMzItYnl0ZXMtbG9uZy1rZXk=",
}


def _production(clean_env: pytest.MonkeyPatch, **overrides: str) -> Settings:
    clean_env.setenv("PREBOOK_ENV", "production")
    for name, value in {**REAL_SECRETS, **overrides}.items():
        clean_env.setenv(name, value)
    return Settings()


def test_env_prefix_is_read(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PREBOOK_LEAD_S", "7.5")
    clean_env.setenv("PREBOOK_NATS_STREAM", "PREBOOKINGS_TEST")
    clean_env.setenv("PREBOOK_GATEWAY_PORT", "8123")

    settings = Settings()

    assert settings.lead_s == 7.5
    assert settings.nats_stream == "PREBOOKINGS_TEST"
    assert settings.gateway_port == 8123


def test_unprefixed_variable_ignored(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LEAD_S", "9")

    settings = Settings()

    assert settings.lead_s == 5.0


def test_env_file_is_read(clean_env: pytest.MonkeyPatch, tmp_path) -> None:
    # clean_env runs the test in tmp_path, where Settings looks for `.env`.
    (tmp_path / ".env").write_text("PREBOOK_MAX_LATE_MS=1234\n")

    settings = Settings()

    assert settings.max_late_ms == 1234


def test_defaults_are_development(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings()

    assert settings.env == "development"
    assert settings.lead_s == 5.0
    assert settings.nats_stream == "PREBOOKINGS"
    assert settings.nats_subject_prefix == "prebooking"


def test_invalid_value_rejected(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PREBOOK_LEAD_S", "0")

    with pytest.raises(ValueError, match="lead_s"):
        Settings()


def test_secrets_masked_in_repr(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PREBOOK_QSTASH_TOKEN", "qstash-token-eyJVc2VySUQiOiJ0ZXN0In0")
    settings = _production(clean_env)

    rendered = repr(settings)

    for value in (*REAL_SECRETS.values(), "qstash-token-eyJVc2VySUQiOiJ0ZXN0In0"):
        assert value not in rendered
    assert "**********" in rendered


def test_secrets_masked_in_str(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PREBOOK_QSTASH_TOKEN", "qstash-token-eyJVc2VySUQiOiJ0ZXN0In0")
    settings = _production(clean_env)

    rendered = str(settings)

    for value in (*REAL_SECRETS.values(), "qstash-token-eyJVc2VySUQiOiJ0ZXN0In0"):
        assert value not in rendered


def test_secret_values_still_readable(clean_env: pytest.MonkeyPatch) -> None:
    settings = _production(clean_env)

    assert settings.token_secret.get_secret_value() == REAL_SECRETS["PREBOOK_TOKEN_SECRET"]


def test_database_password_masked(clean_env: pytest.MonkeyPatch) -> None:
    password = "pg-password-Vq7xN2rT9kL4"
    clean_env.setenv("PREBOOK_DATABASE_URL", f"postgresql+asyncpg://prebook:{password}@db.internal:5432/prebook")
    settings = _production(clean_env)

    assert password not in repr(settings)


def test_placeholders_accepted_in_development(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings()

    assert "change-me" in settings.token_secret.get_secret_value()
    assert "change-me" in settings.session_encryption_keys.get_secret_value()


def test_real_secrets_accepted_in_production(clean_env: pytest.MonkeyPatch) -> None:
    settings = _production(clean_env)

    assert settings.env == "production"


def test_production_rejects_all_defaults(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PREBOOK_ENV", "production")

    with pytest.raises(ConfigurationError):
        Settings()


@pytest.mark.parametrize("variable", sorted(REAL_SECRETS))
def test_production_rejects_placeholder(clean_env: pytest.MonkeyPatch, variable: str) -> None:
    placeholder = "change-me-but-nobody-did-Xq81"

    with pytest.raises(ConfigurationError) as caught:
        _production(clean_env, **{variable: placeholder})

    message = str(caught.value)
    assert variable in message
    assert "PREBOOK_ENV=development" in message
    assert "openssl rand" in message
    assert placeholder not in message


@pytest.mark.parametrize("variable", sorted(REAL_SECRETS))
def test_production_rejects_empty_secret(clean_env: pytest.MonkeyPatch, variable: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        _production(clean_env, **{variable: ""})

    assert variable in str(caught.value)


def test_placeholder_error_hides_other_secrets(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError) as caught:
        _production(clean_env, PREBOOK_QSTASH_NEXT_SIGNING_KEY="change-me")

    message = str(caught.value)
    for value in REAL_SECRETS.values():
        assert value not in message


def test_callback_url_joins_public_url(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PREBOOK_PUBLIC_URL", "https://prebook.example.test/")

    settings = Settings()

    assert settings.callback_url == "https://prebook.example.test/v1/qstash/prepare"


def test_callback_url_default(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings()

    assert settings.callback_url == "http://127.0.0.1:8000/v1/qstash/prepare"


def test_subject_uses_prefix(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PREBOOK_NATS_SUBJECT_PREFIX", "t1234.prebooking")

    settings = Settings()

    assert settings.subject("prepare") == "t1234.prebooking.prepare"
    assert settings.subject("completed") == "t1234.prebooking.completed"


def test_box_url_default(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings()

    assert settings.aimharder_box_url("crossfitbox") == "https://crossfitbox.aimharder.com"


def test_box_url_of_simulator(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PREBOOK_AIMHARDER_BASE_URL", "http://127.0.0.1:8123/boxes/{box}/")

    settings = Settings()

    assert settings.aimharder_box_url("crossfitbox") == "http://127.0.0.1:8123/boxes/crossfitbox"
