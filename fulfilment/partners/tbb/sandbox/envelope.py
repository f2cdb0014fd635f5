"""Response envelopes exactly as the contract describes them.

success: ``{"success": true, "data": ..., "meta": {"request_id", "timestamp"}}``
list:    the same plus ``"pagination": {"total", "limit", "offset", "has_more"}``
error:   ``{"success": false, "error": {"code", "message", "details"}, "meta": {...}}``

``meta.request_id`` is the request's ``X-Request-ID`` (or a generated uuid4), placed on the request
state by ``sandbox_kit.middleware.AccessLogMiddleware`` (with request ids); ``meta.timestamp`` is
ISO-8601 UTC with ``Z``.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from fulfilment.partners.sandbox_kit.clock import Clock, iso_z, system_clock

from .errors import ApiError


def request_id_of(request: Request) -> str:
    request_id = getattr(request.state, "request_id", None)
    if isinstance(request_id, str) and request_id:
        return request_id
    # Only reached when the middleware is bypassed (should not happen in the app).
    return str(uuid.uuid4())


def _clock_of(request: Request) -> Clock:
    sandbox = getattr(request.app.state, "sandbox", None)
    return sandbox.clock if sandbox is not None else system_clock


def meta(request: Request) -> dict[str, str]:
    return {"request_id": request_id_of(request), "timestamp": iso_z(_clock_of(request)())}


def success(request: Request, data: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse({"success": True, "data": data, "meta": meta(request)}, status_code=status_code)


def paginated(request: Request, items: list[Any], total: int, limit: int, offset: int) -> JSONResponse:
    body = {
        "success": True,
        "data": items,
        "pagination": {
            "total": total,
            "limit": limit,
            "offset": offset,
            "has_more": offset + len(items) < total,
        },
        "meta": meta(request),
    }
    return JSONResponse(body)


def error(
    request: Request,
    status_code: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {
        "success": False,
        "error": {"code": code, "message": message, "details": details or {}},
        "meta": meta(request),
    }
    return JSONResponse(body, status_code=status_code, headers=headers)


def from_api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error(request, exc.status, exc.code, exc.message, exc.details, exc.headers or None)
