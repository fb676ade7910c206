"""HTTP requests and responses as the routes see them, independent of h11."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from prebook_simulator.stamps import StampSource

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Request:
    """One complete HTTP request with the arrival stamp of its final byte."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    arrival_ns: int
    stamp_source: StampSource
    connection_id: int

    @property
    def path(self) -> str:
        return urlsplit(self.target).path or "/"

    @property
    def query(self) -> dict[str, str]:
        """Query parameters. A repeated name keeps its last value."""
        return dict(parse_qsl(urlsplit(self.target).query, keep_blank_values=True))

    def header(self, name: str) -> str | None:
        """Return the first value of the header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value

        return None

    def header_map(self) -> dict[str, str]:
        """Headers by lowercase name, with repeated values joined by ", "."""
        joined: dict[str, str] = {}
        for key, value in self.headers:
            joined[key] = f"{joined[key]}, {value}" if key in joined else value

        return joined

    def cookies(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for key, value in self.headers:
            if key != "cookie":
                continue

            for pair in value.split(";"):
                name, separator, cookie_value = pair.strip().partition("=")
                if separator and name:
                    found[name] = cookie_value.strip('"')

        return found

    def is_form(self) -> bool:
        content_type = (self.header("content-type") or "").lower()
        return content_type.startswith("application/x-www-form-urlencoded")

    def is_json(self) -> bool:
        content_type = (self.header("content-type") or "").lower()
        return "json" in content_type.split(";")[0]

    def form(self) -> dict[str, str]:
        """Fields of a form-urlencoded body, or an empty dict for other bodies."""
        if not self.is_form():
            return {}

        text = self.body.decode("utf-8", "replace")
        return dict(parse_qsl(text, keep_blank_values=True))

    def json(self) -> Any:
        """Decode the body as JSON whatever its content type.

        Raises ValueError when the body is not valid UTF-8 JSON.
        """
        return json.loads(self.body.decode("utf-8"))

    def json_if_declared(self) -> Any:
        """Return the decoded body when it is declared and valid JSON, else None."""
        if not self.is_json():
            return None

        try:
            return self.json()
        except ValueError:
            return None


@dataclass
class Response:
    """A JSON response. ``headers`` are extra headers such as Set-Cookie."""

    status: int
    body: Any
    headers: list[tuple[str, str]] = field(default_factory=list)

    def encode_body(self) -> bytes:
        # Compact separators and \u escapes for non-ASCII, like PHP's json_encode.
        return json.dumps(self.body, separators=(",", ":")).encode("ascii")


def json_error(status: int, message: str) -> Response:
    return Response(status, {"error": message})
