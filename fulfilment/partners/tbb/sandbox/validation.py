"""Request parsing that turns malformed input into 400 VALIDATION_ERROR with field details.

``details`` shape (ASSUMED, the docs show none): ``{"errors": [{"field": ..., "message": ...}]}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date
from typing import Any

from starlette.requests import Request

from fulfilment.partners.sandbox_kit.clock import parse_date, parse_iso_utc

from .errors import validation_error

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


async def json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        raise validation_error([{"field": "body", "message": "request body must be valid JSON"}]) from None
    if not isinstance(body, dict):
        raise validation_error([{"field": "body", "message": "request body must be a JSON object"}])
    return body


class FieldErrors:
    """Collects every problem in a body so one 400 lists them all."""

    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []

    def add(self, field: str, message: str) -> None:
        self.errors.append({"field": field, "message": message})

    def raise_if_any(self) -> None:
        if self.errors:
            raise validation_error(self.errors)

    def required_str(self, body: Mapping[str, Any], field: str) -> str:
        value = body.get(field)
        if value is None:
            self.add(field, "is required")
        elif not isinstance(value, str) or not value.strip():
            self.add(field, "must be a non-empty string")
        else:
            return value
        return ""

    def optional_str(self, body: Mapping[str, Any], field: str) -> str | None:
        value = body.get(field)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.add(field, "must be a non-empty string when present")
            return None
        return value

    def positive_int(self, body: Mapping[str, Any], field: str) -> int:
        value = body.get(field)
        if value is None:
            self.add(field, "is required")
        elif isinstance(value, bool) or not isinstance(value, int):
            self.add(field, "must be an integer")
        elif value < 1:
            self.add(field, "must be >= 1")
        else:
            return value
        return 0

    def choice(self, body: Mapping[str, Any], field: str, allowed: tuple[str, ...]) -> str:
        value = self.required_str(body, field)
        if value and value not in allowed:
            self.add(field, f"must be one of {', '.join(allowed)}")
        return value

    def utc_datetime(self, body: Mapping[str, Any], field: str) -> Any:
        value = self.required_str(body, field)
        if not value:
            return None
        parsed = parse_iso_utc(value)
        if parsed is None:
            self.add(field, "must be an ISO-8601 UTC datetime such as 2026-09-12T18:00:00Z")
        return parsed


def pagination(request: Request) -> tuple[int, int]:
    """``limit`` (default 20, 1..100) and ``offset`` (default 0) from the query string."""
    errors = FieldErrors()
    limit = _query_int(request, "limit", DEFAULT_LIMIT, errors)
    offset = _query_int(request, "offset", 0, errors)
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        errors.add("limit", f"must be between 1 and {MAX_LIMIT}")
    if offset is not None and offset < 0:
        errors.add("offset", "must be >= 0")
    errors.raise_if_any()
    return limit or DEFAULT_LIMIT, offset or 0


def _query_int(request: Request, name: str, default: int, errors: FieldErrors) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        errors.add(name, "must be an integer")
        return None


def query_date(request: Request, name: str, errors: FieldErrors) -> date | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    parsed = parse_date(raw)
    if parsed is None:
        errors.add(name, "must be a date in YYYY-MM-DD format")
    return parsed
