"""The one error shape: ApiError, error_body and the middleware that turns every failure into it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiohttp import web

log = logging.getLogger("flowtel.errors")

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
# Set on the request when a failure was answered, so telemetry can count rejections by code.
ERROR_CODE = web.RequestKey("error_code", str)

_STATUS_CODES = {
    400: "validation_failed",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "overloaded",
}
_STATUS_MESSAGES = {
    404: "No such route: check the path against /api/openapi.json.",
    405: "This route does not accept that method: see the Allow header.",
    413: "The request body is too large: send at most 1 MiB of JSON and at most 500 events per request.",
}


class ApiError(Exception):
    """An expected failure with a status, a stable code and a sentence that says what to fix."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Sequence[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = list(details) if details else None
        self.headers = headers or {}


def error_body(code: str, message: str, details: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = list(details)
    return {"error": error}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json", charset="utf-8"
    )


def error_response(error: ApiError) -> web.Response:
    headers = dict(error.headers)
    if error.status in (429, 503) and "Retry-After" not in headers:
        headers["Retry-After"] = "1"
    return json_response(error_body(error.code, error.message, error.details), error.status, headers)


async def read_json_object(request: web.Request, example: str) -> dict[str, Any]:
    """A request body that must be one JSON object; 400 invalid_json or validation_failed otherwise."""
    raw = await request.read()
    try:
        doc = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"The body is not valid JSON ({exc.msg}).") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "validation_failed", f"The body must be a JSON object like {example}.")
    return doc


def validation_error(field: str, message: str) -> ApiError:
    return ApiError(400, "validation_failed", f"{field}: {message}", [{"field": field, "message": message}])


def _from_http_exception(exc: web.HTTPException) -> ApiError:
    status = exc.status
    code = _STATUS_CODES.get(status, "internal_error" if status >= 500 else "validation_failed")
    message = _STATUS_MESSAGES.get(status) or exc.reason or "Request failed."
    headers = {}
    if "Allow" in exc.headers:
        headers["Allow"] = exc.headers["Allow"]
    return ApiError(status, code, message, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        error = exc
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = _from_http_exception(exc)
    except Exception:
        # The trace goes to the log, never to the client.
        log.exception("unhandled error on %s %s", request.method, request.path)
        error = ApiError(500, "internal_error", "Something went wrong on the server; the request was not applied.")
    request[ERROR_CODE] = error.code
    return error_response(error)
