"""JSON logs on stderr, one object per line, with the purchase context when there is one.

Actors bind `purchase_id`, `request_id` and `message_id` through `log_context`, and
every line logged inside carries them.  Values that look like secrets are masked as a
last line of defence; the code itself never logs them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("log_context", default=None)

_SECRET_PATTERNS = [
    re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"((?:client_secret|access_token|password)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}&]+", re.I),
    re.compile(r"(://[^:/@\s]+:)[^@/\s]+(@)"),
]


def redact(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + "***" + (m.group(2) if m.lastindex and m.lastindex > 1 else ""), text)
    return text


def bind(**values: Any) -> contextvars.Token[dict[str, str] | None]:
    """Add fields to every log line of this thread until `unbind(token)`."""
    return _context.set({**(_context.get() or {}), **{k: str(v) for k, v in values.items() if v is not None}})


def context() -> dict[str, str]:
    """The fields bound in this thread (purchase_id, request_id, message_id, ...)."""
    return dict(_context.get() or {})


def unbind(token: contextvars.Token[dict[str, str] | None]) -> None:
    _context.reset(token)


@contextmanager
def log_context(**values: Any) -> Iterator[None]:
    token = bind(**values)
    try:
        yield
    finally:
        unbind(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        entry.update(_context.get() or {})
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "INFO") -> None:
    from fulfilment.outages import QuietOutageLogs

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(QuietOutageLogs())  # a broker outage: one line down, a summary a minute, one back
    logging.Formatter.converter = __import__("time").gmtime
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO; keep it at WARNING to avoid noise (URLs hold no secrets).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("pika").setLevel(logging.WARNING)
