"""Prebook's exception tree.

    PrebookError
    ├── ConfigurationError     a setting is missing or unsafe
    ├── SignatureError         a QStash signature failed one named check
    ├── TokenError             a prebooking token does not match its body
    ├── NotFoundError (LookupError)
    │   ├── PrebookingNotFound
    │   └── SessionNotFound
    └── PublishError           NATS could not take an event

Adapters translate library errors (NATS, SQLAlchemy, httpx) into these once, at the
boundary, with ``raise ... from exc``.
"""

from __future__ import annotations


class PrebookError(Exception):
    """Base class of every error that Prebook raises on purpose."""


class ConfigurationError(PrebookError):
    """A setting is missing, malformed or unsafe for the environment."""


class SignatureError(PrebookError):
    """A QStash signature failed verification.

    ``check`` names the check that failed (for example ``subject`` or ``body``), so the
    gateway can tell the caller which one without revealing key material.
    """

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


class TokenError(PrebookError):
    """A prebooking token does not match the prebooking id and instant it came with."""


class NotFoundError(PrebookError, LookupError):
    """A row that the caller named does not exist."""


class PrebookingNotFound(NotFoundError):
    def __init__(self, prebooking_id: object) -> None:
        super().__init__(f"prebooking {prebooking_id} not found: check the id, or create it first")
        self.prebooking_id = prebooking_id


class SessionNotFound(NotFoundError):
    def __init__(self, user_email: str) -> None:
        super().__init__(
            f"no AimHarder session stored for {user_email}: store one with "
            f"PUT /v1/sessions/{user_email} before the booking fires"
        )
        self.user_email = user_email


class PublishError(PrebookError):
    """NATS did not acknowledge a publish in time, or is unreachable."""
