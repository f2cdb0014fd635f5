"""The admin APIs' plumbing (``/admin/...``): plain JSON, loopback peers only.

Errors are ``{"error": "<reason>"}``.  The guard reads ``request.app.state.sandbox.config
.admin_loopback_only`` (both sandboxes keep their state there).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

_LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost", "testclient"}

AdminHandler = Callable[[Request], Awaitable[Response]]


class BadBody(ValueError):
    """The request body is not the JSON the handler needs (answered 400 with this reason)."""


def fail(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


def loopback_only(handler: AdminHandler) -> AdminHandler:
    """Refuse non-loopback peers: the admin API rewrites state and must not be exposed."""

    async def checked(request: Request) -> Response:
        client = request.client
        if request.app.state.sandbox.config.admin_loopback_only and client is not None:
            host = client.host
            if host not in _LOOPBACK_HOSTS and not host.startswith("127."):
                return fail(403, "the admin API only answers loopback clients")
        return await handler(request)

    checked.__name__ = handler.__name__
    return checked


async def read_json(request: Request) -> Any:
    """The body's JSON value; None when the body is empty; BadBody when it is not JSON."""
    raw = await request.body()
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise BadBody("body must be JSON") from None


async def read_object(request: Request) -> dict[str, Any]:
    """The body's JSON object ({} when empty); BadBody otherwise."""
    body = await read_json(request)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise BadBody("body must be a JSON object")
    return body
