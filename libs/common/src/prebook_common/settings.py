"""Settings read from ``PREBOOK_*`` environment variables.

Units are part of the names (``lead_s``, ``guard_ms``). Secrets are ``SecretStr`` so
that ``repr`` and logs show ``**********``. Outside development, a secret that still has
its placeholder value is rejected at start-up.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from prebook_common.errors import ConfigurationError

PLACEHOLDER_MARK = "change-me"

SECRET_FIELDS = (
    "token_secret",
    "qstash_current_signing_key",
    "qstash_next_signing_key",
    "session_encryption_keys",
)


class Settings(BaseSettings):
    """Configuration shared by every Prebook service."""

    model_config = SettingsConfigDict(env_prefix="PREBOOK_", env_file=".env", extra="ignore")

    env: Literal["development", "production"] = "development"
    log_level: str = "INFO"
    service_name: str = "prebook"

    # Tracing.
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP endpoint for spans, such as http://jaeger:4318; unset exports nothing."
    )
    otel_console: bool = Field(default=False, description="Print finished spans to stderr.")

    # Storage and messaging.
    # Left out of repr because a Postgres URL may carry the database password.
    database_url: str = Field(default="sqlite+aiosqlite:///./prebook.db", repr=False)
    nats_url: str = "nats://127.0.0.1:4222"
    nats_stream: str = "PREBOOKINGS"
    nats_subject_prefix: str = "prebooking"
    nats_duplicate_window_s: float = Field(
        default=3600.0,
        gt=0,
        description="JetStream duplicate window; longer than QStash's retry spacing.",
    )
    nats_publish_timeout_s: float = Field(default=2.0, gt=0)

    # Secrets. The defaults are placeholders that only development accepts.
    token_secret: SecretStr = SecretStr(f"{PLACEHOLDER_MARK}-token-secret")
    qstash_current_signing_key: SecretStr = SecretStr(f"{PLACEHOLDER_MARK}-current-key")
    qstash_next_signing_key: SecretStr = SecretStr(f"{PLACEHOLDER_MARK}-next-key")
    qstash_token: SecretStr | None = None
    session_encryption_keys: SecretStr = SecretStr(PLACEHOLDER_MARK)

    # Gateway.
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    gateway_workers: int = Field(
        default=1,
        ge=1,
        description=(
            "Gateway worker processes on the one port, each with its own NATS connection, database pool and "
            "PREBOOK_MAX_CALLBACKS_IN_FLIGHT; one process uses about one CPU core at most."
        ),
    )
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Base URL that QStash calls; the signature's sub must match it exactly.",
    )
    qstash_clock_tolerance_s: int = Field(default=5, ge=0)
    max_body_bytes: int = Field(
        default=64 * 1024, gt=0, description="Largest request body the gateway reads, on every route; larger gets 413."
    )
    max_callbacks_in_flight: int = Field(
        default=128,
        gt=0,
        description=(
            "QStash callbacks each gateway worker handles at once; more get 503 with Retry-After at once, so "
            "an overload sheds callbacks instead of making every callback late."
        ),
    )

    # AimHarder.
    aimharder_base_url: str = Field(
        default="https://{box}.aimharder.com",
        description="Box API base URL; {box} is replaced by the box subdomain.",
    )
    aimharder_box_urls: dict[str, str] = Field(
        default_factory=dict,
        description='Base URLs of particular boxes as JSON, such as {"demo": "http://sim:8080"}; other boxes use PREBOOK_AIMHARDER_BASE_URL.',
    )
    aimharder_login_url: str = "https://aimharder.com"
    aimharder_timeout_s: float = Field(default=10.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)

    # Firing.
    lead_s: float = Field(default=5.0, gt=0)
    guard_ms: float = Field(
        default=10.0,
        ge=0,
        description="The timer spins this long before the target; asyncio wakes up to several ms late under load.",
    )
    fire_offset_ms: float = 0.0
    max_late_ms: int = Field(
        default=30_000,
        ge=0,
        description="A prepare event later than this after its target is stored as missed.",
    )
    too_early_retries: int = Field(default=3, ge=0)
    too_early_spacing_ms: float = Field(default=30.0, ge=0)

    # REST API.
    admin_api_key: SecretStr | None = Field(
        default=None, description="Bearer key that may create users and API keys; unset disables admin routes."
    )
    max_pending_per_user: int = Field(default=15, gt=0)

    # Scheduler.
    scheduler_backend: Literal["auto", "local", "qstash"] = Field(
        default="auto", description="auto: qstash when PREBOOK_QSTASH_TOKEN is set, else local."
    )
    qstash_url: str = "https://qstash.upstash.io"
    qstash_retries: int = Field(default=3, ge=0)
    local_delivery_url: str | None = Field(
        default=None,
        description="Where the local backend POSTs callbacks; defaults to the public callback URL.",
    )
    scheduler_poll_interval_s: float = Field(default=0.5, gt=0)
    scheduler_lease_s: float = Field(default=30.0, gt=0)

    # AimHarder sessions.
    session_refresh_interval_s: float = Field(default=25 * 60, gt=0)
    session_max_age_s: float = Field(
        default=20 * 60, gt=0, description="A session older than this is refreshed while a booking prepares."
    )
    session_refresher_enabled: bool = Field(
        default=True, description="Run the executor's background task that refreshes sessions before they expire."
    )
    session_refresh_poll_s: float = Field(
        default=60.0, gt=0, description="How often the refresher looks for sessions due for a refresh."
    )
    session_relogin_deadline_s: float = Field(
        default=5.0,
        ge=0,
        description="After a logout at fire time, log in again and fire once more only until this long after the target.",
    )

    # Executor's JetStream consumer, and the hand-over of bookings between executors.
    executor_durable: str = "executor"
    ack_wait_s: float = Field(
        default=2.0,
        gt=0,
        description=(
            "JetStream redelivers an event that was not acknowledged within this. The executor acknowledges "
            "a prepare event once it has claimed the prebooking, so the wait covers only the claim."
        ),
    )
    executor_max_parked: int = Field(
        default=10_000, gt=0, description="Maximum bookings one executor prepares or keeps parked at once; further events are redelivered to other executors."
    )
    executor_lease_s: float = Field(
        default=1.5,
        gt=0,
        description=(
            "An executor renews its lease in the database every third of this. Another executor takes over "
            "its claimed bookings once the lease has run out, so a crashed executor's bookings move within "
            "about this plus PREBOOK_EXECUTOR_TAKEOVER_SCAN_S."
        ),
    )
    executor_takeover_scan_s: float = Field(
        default=0.5,
        gt=0,
        description=(
            "How often each executor looks in the database for claimed bookings whose executor's lease ran "
            "out or that were handed back, and takes them over."
        ),
    )
    executor_handback_margin_s: float = Field(
        default=1.0,
        ge=0,
        description=(
            "On shutdown, parked bookings whose target is further away than this are handed back to other "
            "executors; nearer ones are fired before the executor exits."
        ),
    )

    @field_validator("qstash_token", "admin_api_key", "local_delivery_url", "otel_exporter_otlp_endpoint", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        # `PREBOOK_QSTASH_TOKEN=` in a .env file must not switch the scheduler to QStash.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _reject_placeholders(self) -> Settings:
        if self.env == "development":
            return self

        for name in SECRET_FIELDS:
            value = getattr(self, name).get_secret_value()
            if not value or PLACEHOLDER_MARK in value:
                raise ConfigurationError(
                    f"PREBOOK_{name.upper()} still has its placeholder value, which only "
                    f"PREBOOK_ENV=development accepts: set it to a random secret "
                    f"(for example `openssl rand -hex 32`)"
                )
        return self

    @property
    def resolved_scheduler_backend(self) -> str:
        if self.scheduler_backend != "auto":
            return self.scheduler_backend
        return "qstash" if self.qstash_token is not None else "local"

    @property
    def callback_url(self) -> str:
        """URL of the QStash callback, exactly as QStash is configured to call it."""
        return self.public_url.rstrip("/") + "/v1/qstash/prepare"

    def subject(self, name: str) -> str:
        """Full NATS subject of an event name such as ``prepare``."""
        return f"{self.nats_subject_prefix}.{name}"

    def aimharder_box_url(self, box_subdomain: str) -> str:
        """Base URL of a box's AimHarder API: its entry in aimharder_box_urls, else the template."""
        override = self.aimharder_box_urls.get(box_subdomain)
        if override:
            return override.rstrip("/")
        return self.aimharder_base_url.replace("{box}", box_subdomain).rstrip("/")


@lru_cache
def get_settings() -> Settings:
    """Settings of this process, read once from the environment."""
    return Settings()
