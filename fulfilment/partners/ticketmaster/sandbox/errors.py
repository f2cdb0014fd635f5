"""The error envelope and the exception handlers raise to produce it.

Envelope (public doc, contract): ``{"error": {"message", "code", "http_code", "severity"}}``. Every
code and its HTTP status live in ``assumed.py`` (``ErrorSpec``); handlers raise ``TMError(spec)``
and the request pipeline turns it into the envelope.
"""

from __future__ import annotations

from typing import Any

from .assumed import ErrorSpec


class TMError(Exception):
    def __init__(self, spec: ErrorSpec, message: str | None = None) -> None:
        super().__init__(message or spec.message)
        self.spec = spec
        self.message = message or spec.message

    def body(self) -> dict[str, Any]:
        return envelope(self.spec, self.message)


def envelope(spec: ErrorSpec, message: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message or spec.message, "code": spec.code, "http_code": spec.http_status,
                      "severity": spec.severity}}
