"""JSON error responses of the REST API.

Every error body has the shape ``{"error": "<short phrase>", "detail": "<sentence>"}``,
the same as the QStash callback's, plus fields that help a client act (``field``,
``existing_id``, ``status``). Routes raise ApiError. ``install_error_handlers`` turns
ApiError, FastAPI's request validation errors and Starlette's HTTP errors (unknown
path, wrong method, unreadable body) into that shape.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

# Maximum length of the repr of a rejected input value in an error message.
MAX_SHOWN_INPUT_CHARS = 80


class ApiError(Exception):
    """An error that the API returns to the client as JSON with ``status_code``."""

    def __init__(
        self,
        status_code: int,
        error: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.error = error
        self.detail = detail
        self.headers = headers
        self.extra = extra

    def response(self) -> JSONResponse:
        body = {"error": self.error, "detail": self.detail, **jsonable_encoder(self.extra)}
        return JSONResponse(body, status_code=self.status_code, headers=self.headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error_response)
    app.add_exception_handler(RequestValidationError, _validation_error_response)
    app.add_exception_handler(HTTPException, _http_error_response)


async def _api_error_response(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, ApiError):
        raise TypeError(f"handler for ApiError got {type(exc).__name__}")
    return exc.response()


async def _validation_error_response(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):
        raise TypeError(f"handler for RequestValidationError got {type(exc).__name__}")

    errors = [_describe(error) for error in exc.errors()]
    first = errors[0] if errors else {"field": None, "message": "invalid request"}
    return JSONResponse(
        {
            "error": "invalid request",
            "detail": first["message"],
            "field": first["field"],
            "errors": errors,
        },
        status_code=422,
    )


async def _http_error_response(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, HTTPException):
        raise TypeError(f"handler for HTTPException got {type(exc).__name__}")

    # FastAPI returns 400 for a JSON body that is not UTF-8. Every other
    # unreadable body is a 422 "invalid request", so this one is too.
    if exc.status_code == 400 and request.method in ("POST", "PUT", "PATCH"):
        detail = "body is not valid UTF-8 JSON: send the request body as JSON encoded in UTF-8"
        return JSONResponse(
            {"error": "invalid request", "detail": detail, "field": None, "errors": [{"field": None, "message": detail}]},
            status_code=422,
        )

    error = HTTPStatus(exc.status_code).phrase.lower() if exc.status_code in HTTPStatus._value2member_map_ else "error"
    return JSONResponse({"error": error, "detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


def _describe(error: dict[str, Any]) -> dict[str, Any]:
    """Return the field and a message that names the rejected value."""
    # The first location item is where the value came from (body, query or path).
    location = [str(part) for part in error.get("loc", ())]
    field = ".".join(location[1:]) or None

    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if error.get("type") == "json_invalid":
        # The location after "body" is the character position where decoding stopped.
        reason = (error.get("ctx") or {}).get("error", message)
        return {"field": None, "message": f"body is not valid JSON at position {field}: {reason}"}
    if error.get("type") == "missing":
        return {"field": field, "message": f"field {field} is missing: add it to the request"}
    # Messages of the gateway's own validators already name the field and quote the value.
    if error.get("type") == "value_error":
        return {"field": field, "message": message}

    shown_input = repr(error.get("input"))
    if len(shown_input) > MAX_SHOWN_INPUT_CHARS:
        shown_input = shown_input[:MAX_SHOWN_INPUT_CHARS] + "..."
    return {"field": field, "message": f"field {field}: {message} (got {shown_input})"}
