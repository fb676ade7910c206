"""Validation of JSON and form fields, with errors that name the field and the fix."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

_DAY_FORMAT = "%Y%m%d"
_DIGITS = re.compile(r"[0-9]{1,18}")


class FieldError(ValueError):
    """A request field that is missing or invalid. The message names the field."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"field '{name}' {problem}")
        self.name = name


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise FieldError("(body)", f"must be a JSON object, got {type(body).__name__}")

    return body


def read_int(
    body: dict[str, Any],
    name: str,
    *,
    default: int | None = None,
    minimum: int | None = None,
    nullable: bool = False,
) -> int | None:
    """Return ``body[name]`` as an int.

    A missing field returns ``default`` unless ``default`` is None and ``nullable`` is
    false, in which case the field is required. JSON booleans are rejected.
    """
    if name not in body:
        if default is None and not nullable:
            raise FieldError(name, "is missing. Send an integer")

        return default

    value = body[name]
    if value is None:
        if nullable:
            return None

        raise FieldError(name, "must be an integer, got null")

    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(name, f"must be an integer, got {value!r}")

    if minimum is not None and value < minimum:
        raise FieldError(name, f"must be an integer >= {minimum}, got {value}")

    return value


def read_number(body: dict[str, Any], name: str, *, minimum: float | None = None) -> float:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(name, f"must be a number, got {value!r}")

    if minimum is not None and value < minimum:
        raise FieldError(name, f"must be a number >= {minimum}, got {value}")

    return float(value)


def read_text(body: dict[str, Any], name: str, *, default: str | None = None) -> str:
    """Return ``body[name]`` as a non-empty string, or ``default`` when it is missing."""
    if name not in body or body[name] is None:
        if default is None:
            raise FieldError(name, "is missing. Send a non-empty string")

        return default

    value = body[name]
    if not isinstance(value, str) or not value:
        raise FieldError(name, f"must be a non-empty string, got {value!r}")

    return value


def read_optional_text(body: dict[str, Any], name: str) -> str | None:
    """Return ``body[name]`` as a non-empty string, or None when it is missing or null."""
    if body.get(name) is None:
        return None

    return read_text(body, name)


def check_day(name: str, value: str) -> str:
    """Return ``value`` if it is a calendar day written YYYYMMDD."""
    if len(value) != 8 or not value.isdigit():
        raise FieldError(name, f"must be a day written YYYYMMDD, got {value!r}")

    try:
        datetime.strptime(value, _DAY_FORMAT)
    except ValueError:
        raise FieldError(name, f"must be a real calendar day written YYYYMMDD, got {value!r}") from None

    return value


def read_form_id(form: dict[str, str], name: str) -> int:
    """Return the form field ``name`` as a non-negative decimal integer."""
    if name not in form:
        raise FieldError(name, "is missing. Send it as a decimal integer")

    value = form[name].strip()
    if not _DIGITS.fullmatch(value):
        raise FieldError(name, f"must be a decimal integer, got {form[name]!r}")

    return int(value)


def read_form_day(form: dict[str, str], name: str) -> str:
    if name not in form:
        raise FieldError(name, "is missing. Send the class day as YYYYMMDD")

    return check_day(name, form[name].strip())


def read_form_flag(form: dict[str, str], name: str) -> bool:
    """Return the form field ``name``, which must be "0" or "1", as a bool."""
    if name not in form:
        raise FieldError(name, "is missing. Send 0 or 1")

    value = form[name].strip()
    if value not in ("0", "1"):
        raise FieldError(name, f"must be 0 or 1, got {form[name]!r}")

    return value == "1"
