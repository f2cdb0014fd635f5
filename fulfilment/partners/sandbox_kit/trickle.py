"""The sandboxes' "trickle" fault: an answer sent slowly, a piece at a time.

A partner (or a proxy in front of it) that sends its answer in small pieces, each arriving just
inside the client's read timeout, keeps a call open for as long as it likes: httpx starts the read
timeout again for every piece.  Both sandboxes (TBB and Ticketmaster) offer it as a fault rule
(``trickle_ms``, ``trickle_chunks``) so tests can show that a partner call still ends at its
deadline (fulfilment/partners/deadline.py).  Part of the sandbox kit so both trickle the same way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


@dataclass(frozen=True)
class Trickle:
    """Send the body in `chunks` pieces, waiting `interval_seconds` before each one."""

    chunks: int
    interval_seconds: float


class TrickleRule(Protocol):
    """The two fields a sandbox's fault rule has for this fault."""

    trickle_ms: float
    trickle_chunks: int


def parse_trickle(endpoint: str, raw: Any, rule: TrickleRule) -> None:
    """Set `rule`'s trickle fields from the JSON rule `raw`; ValueError with the reason if invalid."""
    if "trickle_ms" in raw:
        value = raw["trickle_ms"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise ValueError(f"{endpoint}.trickle_ms must be a number >= 0")
        rule.trickle_ms = float(value)
    if "trickle_chunks" in raw:
        value = raw["trickle_chunks"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{endpoint}.trickle_chunks must be a positive integer")
        rule.trickle_chunks = value


class TrickleResponse(Response):
    """`answer`'s status and headers at once (its real Content-Length included), then its body
    in pieces.  Whatever the handler did (an order committed...) is done before the first byte."""

    def __init__(self, answer: Response, trickle: Trickle) -> None:
        super().__init__(status_code=answer.status_code)
        self.raw_headers = answer.raw_headers
        self._body = bytes(answer.body)
        self._trickle = trickle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        size = max(1, -(-len(self._body) // self._trickle.chunks))
        pieces = [self._body[start:start + size] for start in range(0, len(self._body), size)] or [b""]
        for number, piece in enumerate(pieces, start=1):
            await asyncio.sleep(self._trickle.interval_seconds)
            await send({"type": "http.response.body", "body": piece, "more_body": number < len(pieces)})


def trickled(answer: Response, trickle: Trickle | None) -> Response:
    return answer if trickle is None else TrickleResponse(answer, trickle)
