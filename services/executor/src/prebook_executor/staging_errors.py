"""Errors of staged requests and of their httpx fallback.

::

    StagingError
    ├── ConnectFailed         the TCP connection or the TLS handshake failed
    ├── ConnectionLost        the server closed or reset the connection before a full response
    ├── ResponseTimeout       no complete response arrived within the timeout
    ├── InvalidResponse       the response is not valid HTTP/1.1
    └── FinalByteAlreadySent  ``send_final_byte`` was called a second time

Messages name the URL and never the headers, which carry the session cookies.
"""

__all__ = [
    "ConnectFailed",
    "ConnectionLost",
    "FinalByteAlreadySent",
    "InvalidResponse",
    "ResponseTimeout",
    "StagingError",
]


class StagingError(Exception):
    """Base class for failures of a staged or fallback request."""


class ConnectFailed(StagingError):
    """The TCP connection or the TLS handshake failed or timed out."""


class ConnectionLost(StagingError):
    """The server closed or reset the connection before sending a full response."""


class ResponseTimeout(StagingError):
    """No complete response arrived within the timeout."""


class InvalidResponse(StagingError):
    """The server sent bytes that are not a valid HTTP/1.1 response."""


class FinalByteAlreadySent(StagingError):
    """``send_final_byte`` was called on a request whose final byte is already written."""
