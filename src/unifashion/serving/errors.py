"""Errors of the service: every answer that is not a success is JSON,
``{"error": {"status", "code", "message"}}`` (validation errors add ``details``), and none says
more than the client needs: no traceback, no exception text of an unexpected error, no path on
the server."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from unifashion.index import DuplicateItemError, UnknownItemError

logger = logging.getLogger("unifashion.serving")


class ApiError(Exception):
    """An error answered as ``{"error": {"status", "code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_body(status: int, code: str, message: str, details: list | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"status": status, "code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


async def send_error(send, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
    """Answer an error from ASGI middleware (before the app has seen the request), closing the
    connection: the rest of the request may still be on its way."""
    body = json.dumps(error_body(status, code, message)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class ErrorDetail(BaseModel):
    status: int
    code: str = Field(description="stable machine-readable name, e.g. upload_too_large")
    message: str = Field(description="what was wrong, for people")
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


ERROR_DESCRIPTIONS = {
    400: "corrupt or empty image, malformed body, or a Host header the service does not answer to",
    401: "API key missing",
    403: "API key wrong, or a cross-origin request from a browser",
    404: "unknown item",
    408: "the request body did not arrive in time",
    409: "item id already present, or the index is read-only",
    413: "request body or image too large (bytes, pixels, a side, or the aspect ratio)",
    415: "wrong content type of the request or of an uploaded part, or an image format not decoded",
    422: "invalid field: top_k out of range, too many steps, unknown category or style, text too long, "
         "JSON too deep",
    500: "unexpected error (the message says nothing more; the server log has the details)",
    503: "busy: the queue is full or the wait for the model ran out; retry after Retry-After seconds",
}

# Every operation can answer these: the middleware (Host, Origin, body limits) and admission
# control act before any endpoint, and any endpoint can fail unexpectedly.
COMMON_ERRORS = (400, 500, 503)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for an operation: the given statuses and the common ones."""
    retry = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
    return {s: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[s],
                **({"headers": retry} if s == 503 else {})}
            for s in sorted({*statuses, *COMMON_ERRORS})}


@contextmanager
def pipeline_errors() -> Iterator[None]:
    """Turn the pipeline's and the index's exceptions into API errors. Messages are the
    service's own where the library's would name files on the server."""
    try:
        yield
    except UnknownItemError as exc:
        raise ApiError(404, "unknown_item", _unknown_item_message(exc)) from exc
    except DuplicateItemError as exc:
        raise ApiError(409, "duplicate_item", f"{exc}; send replace=true to replace it") from exc
    except PermissionError as exc:
        raise ApiError(409, "read_only", "the index is open read-only: adding and deleting items is off") from exc
    except ValueError as exc:
        raise ApiError(422, "invalid_value", str(exc)) from exc


def _unknown_item_message(exc: UnknownItemError) -> str:
    message = str(exc)
    # "no item 'x' in the index at /srv/...": keep what names the item, drop where the index lives.
    head, _, tail = message.partition(" in the index at ")
    if not tail:
        return message
    _, _, listed = tail.partition(": ")
    return f"{head} in the index" + (f": {listed}" if listed else "")


def _endpoint_routes(routes) -> Iterator[Any]:
    """The routes that answer requests: an included router (the service's are included without
    a prefix) is one route in newer FastAPI versions, which holds the router's own."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _endpoint_routes(included.routes)
        else:
            yield route


def _methods_of(app: FastAPI, scope) -> list[str]:
    methods: set[str] = set()
    for route in _endpoint_routes(app.router.routes):
        match, _ = route.matches({**scope, "method": "\0"})  # no method matches: path matches are PARTIAL
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return JSONResponse(error_body(exc.status, exc.code, exc.message), status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        details = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                    "type": str(e.get("type", ""))} for e in exc.errors()]
        # "top_k: Input should be ..." (the loc's first part, "body" or "query", says nothing useful)
        message = "; ".join(f"{'.'.join(d['loc'][1:]) or '.'.join(d['loc']) or 'request'}: {d['msg']}"
                            for d in details)
        return JSONResponse(error_body(422, "invalid_request", message or "invalid request", details),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # every method of the path: one route per method lists only its own
            headers["Allow"] = ", ".join(_methods_of(app, request.scope))
        return JSONResponse(error_body(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail)),
                            status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(RecursionError)
    async def _too_deep(_request: Request, _exc: RecursionError):
        return JSONResponse(error_body(422, "invalid_json", "the request nests its data too deeply"),
                            status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        logger.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body(500, "internal_error", "the service failed to answer this request; "
                                                              "the server log has the details"),
                            status_code=500)
