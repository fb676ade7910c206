"""HTTP/1.1 framing with h11: request URLs and bytes, and the response type."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11

__all__ = ["Endpoint", "PreparedRequest", "StagedResponse", "parse_url", "prepare_request", "serialize_request"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class StagedResponse:
    """HTTP response to a staged request, or to its fallback when ``fallback`` is true.

    ``sent_ns`` and ``received_ns`` are ``time.time_ns()`` values. ``sent_ns`` is taken
    just before the final byte was written, or before the fallback request started.
    ``received_ns`` is taken when the first response bytes were read, or for the
    fallback when httpx returned the status line and headers. Header names are lowercase.
    """

    status_code: int
    headers: list[tuple[str, str]]
    body: bytes
    sent_ns: int
    received_ns: int
    fallback: bool = False

    def json(self) -> Any:
        """Decode the body as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Connection address, Host header and request target of a URL."""

    scheme: str
    host: str
    port: int
    authority: str
    target: str


def parse_url(url: str) -> Endpoint:
    """Split an http or https URL, raising ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValueError(f"Unsupported URL scheme in {url!r}: expected http or https")
    if not parts.hostname:
        raise ValueError(f"Missing host in URL {url!r}")
    if parts.username is not None:
        raise ValueError("Credentials in the URL are not supported: send them in a header")

    # The Host header is the authority exactly as the URL writes it, without user info.
    authority = parts.netloc.rpartition("@")[2]
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"

    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    return Endpoint(parts.scheme, parts.hostname, port, authority, target)


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """HTTP/1.1 request validated and serialized once, for writing on several connections."""

    method: str
    endpoint: Endpoint
    data: bytes
    # The last byte of ``data``, made once so that firing writes it without slicing.
    final_byte: bytes

    def start_connection(self) -> h11.Connection:
        """Return a client h11 connection that has sent a request like this one and now expects its response.

        h11 reads a response according to the request's method (a HEAD response has no
        body). So a bodiless request with the same method and target replaces the full
        one, and no parked connection has to keep the headers as h11 events.
        """
        connection = h11.Connection(h11.CLIENT)
        headers = [("Host", self.endpoint.authority), ("Content-Length", "0")]
        connection.send(h11.Request(method=self.method, target=self.endpoint.target, headers=headers))
        connection.send(h11.EndOfMessage())
        return connection


def prepare_request(url: str, *, method: str = "POST", headers: list[tuple[str, str]], body: bytes) -> PreparedRequest:
    """Validate and serialize a request as ``stage_request`` sends it.

    Adds ``Host`` (from the URL) and ``Content-Length`` unless ``headers`` contains them.
    Raises ValueError for an unsupported URL, invalid headers, or a body that does not
    match a given Content-Length.
    """
    endpoint = parse_url(url)
    names = {name.lower() for name, _ in headers}
    request_headers = list(headers)
    if "host" not in names:
        request_headers.insert(0, ("Host", endpoint.authority))

    # h11 frames a request without Content-Length or Transfer-Encoding as having no body.
    has_framing = "content-length" in names or "transfer-encoding" in names
    if not has_framing and (body or method.upper() not in ("GET", "HEAD")):
        request_headers.append(("Content-Length", str(len(body))))

    connection = h11.Connection(h11.CLIENT)
    try:
        events: list[h11.Event] = [h11.Request(method=method, target=endpoint.target, headers=request_headers)]
        if body:
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())
        data = b"".join(connection.send(event) for event in events)
    except h11.LocalProtocolError as exc:
        raise ValueError(f"Cannot serialize {method} request to {endpoint.target}: {exc}") from exc

    return PreparedRequest(method, endpoint, data, data[-1:])


def serialize_request(
    url: str, *, method: str = "POST", headers: list[tuple[str, str]], body: bytes
) -> bytes:
    """Serialize a complete HTTP/1.1 request byte for byte as ``stage_request`` sends it.

    Adds ``Host`` (from the URL) and ``Content-Length`` unless ``headers`` contains them.
    Raises ValueError for an unsupported URL, invalid headers, or a body that does not
    match a given Content-Length.
    """
    return prepare_request(url, method=method, headers=headers, body=body).data
