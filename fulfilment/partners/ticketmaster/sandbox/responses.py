"""What a handler answers (``Outcome``) and how it becomes an HTTP response.

Handlers return an ``Outcome`` (status, JSON-able body, headers) instead of a Starlette response so
the pipeline can keep it for a polling URL and render it later. Money is ``Decimal`` in bodies and
rendered at the last moment in the configured format: a JSON number with exactly two decimals
(``97.90``, seed 003) or a string (``"97.90"``).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from starlette.responses import Response

from .assumed import CENT

# A per-process marker that no request can forge: numbers are spliced in after json.dumps.
_MARK = "tmsbx" + secrets.token_hex(8)
_MARKED = re.compile('"' + _MARK + r"(-?[0-9]+\.[0-9]{2})" + '"')


@dataclass
class Outcome:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT)


def _prepare(value: Any, as_string: bool) -> Any:
    if isinstance(value, Decimal):
        text = f"{money(value):.2f}"
        return text if as_string else _MARK + text
    if isinstance(value, dict):
        return {key: _prepare(item, as_string) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_prepare(item, as_string) for item in value]
    return value


def dumps(body: Any, money_format: str = "number") -> bytes:
    text = json.dumps(_prepare(body, money_format == "string"), separators=(",", ":"), ensure_ascii=False)
    return _MARKED.sub(r"\1", text).encode("utf-8")


def to_plain(body: Any) -> Any:
    """Decimals as strings (for the admin API, which is plain JSON)."""
    return _prepare(body, True)


def render(outcome: Outcome, money_format: str = "number") -> Response:
    if outcome.body is None:
        return Response(status_code=outcome.status, headers=outcome.headers)
    return Response(dumps(outcome.body, money_format), status_code=outcome.status, headers=outcome.headers,
                    media_type="application/json")
