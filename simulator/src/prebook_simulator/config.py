"""Settings that change the simulator's responses, editable through PUT /_sim/config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from prebook_simulator.fields import FieldError, read_int, read_number, require_object

LANGUAGES = ("es", "ca", "en")

# NOTE: AimHarder's real session lifetime is not known. 30 minutes fits a client that
# refreshes about every 25 minutes.
DEFAULT_SESSION_TTL_MS = 30 * 60 * 1000


@dataclass
class SimulatorConfig:
    """Response delay, clock offset, message language and session lifetime.

    ``delay_ms`` delays each /api/ response. ``clock_offset_ms`` is added to real time to
    give the simulator's clock, which decides openings and session expiry.
    ``session_ttl_ms`` is the lifetime of a session made by login or tokenUpdate.
    """

    delay_ms: float = 0.0
    clock_offset_ms: float = 0.0
    lang: str = "es"
    session_ttl_ms: int = DEFAULT_SESSION_TTL_MS

    @property
    def clock_offset_ns(self) -> int:
        return round(self.clock_offset_ms * 1_000_000)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def reset(self) -> None:
        defaults = SimulatorConfig()
        for setting in fields(self):
            setattr(self, setting.name, getattr(defaults, setting.name))

    def update(self, body: Any) -> None:
        """Apply the settings present in ``body`` after validating all of them.

        Raises FieldError for an unknown or invalid setting and then changes nothing.
        """
        changes = require_object(body)

        known = {setting.name for setting in fields(self)}
        for name in changes:
            if name not in known:
                raise FieldError(name, f"is not a setting. Use one of {sorted(known)}")

        validated: dict[str, Any] = {}
        if "delay_ms" in changes:
            validated["delay_ms"] = read_number(changes, "delay_ms", minimum=0)
        if "clock_offset_ms" in changes:
            validated["clock_offset_ms"] = read_number(changes, "clock_offset_ms")
        if "lang" in changes:
            validated["lang"] = _read_language(changes["lang"])
        if "session_ttl_ms" in changes:
            validated["session_ttl_ms"] = read_int(changes, "session_ttl_ms", minimum=1)

        for name, value in validated.items():
            setattr(self, name, value)


def _read_language(value: Any) -> str:
    if value not in LANGUAGES:
        raise FieldError("lang", f"must be one of {list(LANGUAGES)}, got {value!r}")

    return value
