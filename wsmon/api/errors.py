"""Every error the API returns is one JSON shape, ``{"error": {"code", "message", ...}}``.

Messages are worded for the caller and never carry a stack trace, a secret or a local path:
unexpected exceptions and store outages are logged here in full and answered with their kind
only. Untrusted text (ids, S3 keys) is returned as JSON data, never as HTML.
"""

from __future__ import annotations

import re
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from wsmon.core.textsafe import strip_control
from wsmon.engine.store.base import (
    AlertNotFound,
    CorruptStore,
    StoreError,
    StoreNotInitialized,
    StoreUnavailable,
    WorksetNotFound,
)

log = structlog.get_logger("wsmon.api")

# an absolute path anywhere in a message (a store file, a token file, a home directory)
_PATH = re.compile(r"(?<![\w:/])/(?:[\w.@+-]+/)+[\w.@+-]*")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "body_too_large", f"request body larger than {limit} bytes")


def public_text(text: object, limit: int = 500) -> str:
    """Text that may leave the process in a response: no control characters, no local paths."""
    from wsmon.core.redaction import redact

    cleaned = _PATH.sub("<path>", redact(strip_control(text)))
    return cleaned if len(cleaned) <= limit else cleaned[:limit - 1] + "…"


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def _json(status: int, code: str, message: str, headers: dict[str, str] | None = None,
          **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 409: "conflict",
               413: "body_too_large", 415: "unsupported_media_type", 422: "invalid_request",
               429: "too_many_requests", 503: "unavailable"}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _json(exc.status, exc.code, exc.message, headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:20]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append({"field": public_text(where, 200), "problem": public_text(err.get("msg", ""), 300)})
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:3])
        return _json(422, "invalid_request", summary or "invalid request", problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such endpoint"
        return _json(exc.status_code, _HTTP_CODES.get(exc.status_code, "error"),
                     public_text(message), dict(exc.headers or {}) or None)

    @app.exception_handler(WorksetNotFound)
    @app.exception_handler(AlertNotFound)
    async def _not_found(request: Request, exc: StoreError) -> JSONResponse:
        return _json(404, "not_found", public_text(exc))

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        if isinstance(exc, (StoreUnavailable, StoreNotInitialized, CorruptStore)):
            log.error("api.store_unavailable", path=request.url.path, error=strip_control(str(exc)))
            return _json(503, "store_unavailable", f"the state store is unavailable ({type(exc).__name__})")
        return _json(409, "refused", public_text(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        library = type(exc).__module__.split(".")[0]
        if library in ("botocore", "boto3", "urllib3", "sqlite3"):
            log.error("api.backend_error", path=request.url.path, error=strip_control(str(exc)))
            return _json(503, "store_unavailable", f"a backend did not answer ({type(exc).__name__})")
        log.exception("api.internal_error", path=request.url.path)
        return _json(500, "internal_error", "internal error; the server log has the details")
