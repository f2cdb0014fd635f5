"""Fault injection, settable at runtime per endpoint through the admin API.

Endpoint names: ``auth_token list_events get_event list_sections list_rows create_quote
create_order get_order list_orders`` and ``*``. A request uses the rule for its own endpoint if
there is one, otherwise the ``*`` rule (rules are not merged; a ``fail_next`` on ``*`` counts down
across all endpoints that fall back to it).

Rule fields (all optional)::

    error_rate              0..1   answer a 5xx drawn from error_statuses
    error_statuses          list   subset of 429, 500, 502, 503, 504 (default all four 5xx)
    plain_body_rate         0..1   share of injected 5xx with a text/html or text/plain body
                                   instead of the JSON envelope (default 0.5)
    rate_limit_rate         0..1   answer 429 RATE_LIMITED with "Retry-After"
    retry_after_seconds     >0     Retry-After value (default 1; fractional allowed for fast tests)
    latency_ms              >=0    added delay before the request is handled (asyncio.sleep)
    fail_next               int    the next N requests fail with a status from error_statuses
                                   (deterministic; 429 in the list gives RATE_LIMITED)
    drop_after_commit_rate  0..1   create_order only: commit the order, then drop the connection
    drop_next               int    create_order only: the next N successful orders are dropped

Order of decisions for one request: latency, then fail_next, then rate_limit_rate, then
error_rate. All of these are decided BEFORE the handler runs, so an injected error never commits
anything. Drops are decided AFTER a successful (201) create_order: the order exists and its quote
is consumed, yet the client sees a transport error, which is exactly the "unknown outcome" case a
client must resolve with ``GET /v1/orders?quote_id=...``.

Randomness comes from ``random.Random(seed)``; every injected fault is counted per endpoint/kind.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from . import envelope
from .errors import ERROR_CODES, SERVER_ERROR_CODES

ENDPOINTS: tuple[str, ...] = (
    "auth_token", "list_events", "get_event", "list_sections", "list_rows",
    "create_quote", "create_order", "get_order", "list_orders",
)
WILDCARD = "*"
INJECTABLE_STATUSES: tuple[int, ...] = (429, 500, 502, 503, 504)
DROP_ENDPOINTS = ("create_order", WILDCARD)


@dataclass
class FaultRule:
    error_rate: float = 0.0
    error_statuses: list[int] = field(default_factory=lambda: [500, 502, 503, 504])
    plain_body_rate: float = 0.5
    rate_limit_rate: float = 0.0
    retry_after_seconds: float = 1
    latency_ms: float = 0.0
    fail_next: int = 0
    drop_after_commit_rate: float = 0.0
    drop_next: int = 0

    @classmethod
    def from_json(cls, endpoint: str, raw: Any) -> FaultRule:
        """Validate one rule; ValueError with a readable reason otherwise."""
        if endpoint not in ENDPOINTS and endpoint != WILDCARD:
            raise ValueError(f"unknown endpoint {endpoint!r}; known: {[*ENDPOINTS, WILDCARD]}")
        if not isinstance(raw, Mapping):
            raise ValueError(f"rule for {endpoint!r} must be an object")
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown rule fields for {endpoint!r}: {sorted(unknown)}")
        rule = cls()
        for key in ("error_rate", "plain_body_rate", "rate_limit_rate", "drop_after_commit_rate"):
            if key in raw:
                setattr(rule, key, _number(endpoint, key, raw[key], low=0.0, high=1.0))
        if "latency_ms" in raw:
            rule.latency_ms = _number(endpoint, "latency_ms", raw["latency_ms"], low=0.0)
        if "retry_after_seconds" in raw:
            value = _number(endpoint, "retry_after_seconds", raw["retry_after_seconds"], low=0.0)
            rule.retry_after_seconds = int(value) if float(value).is_integer() else value
        for key in ("fail_next", "drop_next"):
            if key in raw:
                value = raw[key]
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{endpoint}.{key} must be a non-negative integer")
                setattr(rule, key, value)
        if "error_statuses" in raw:
            statuses = raw["error_statuses"]
            if (not isinstance(statuses, list) or not statuses
                    or any(s not in INJECTABLE_STATUSES or isinstance(s, bool) for s in statuses)):
                raise ValueError(f"{endpoint}.error_statuses must be a non-empty list from {list(INJECTABLE_STATUSES)}")
            rule.error_statuses = list(statuses)
        if endpoint not in DROP_ENDPOINTS and (rule.drop_after_commit_rate or rule.drop_next):
            raise ValueError("drop_after_commit_rate/drop_next only apply to create_order (or '*')")
        return rule

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _number(endpoint: str, key: str, value: Any, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{endpoint}.{key} must be a number")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{endpoint}.{key} must be {bound}")
    return value


def parse_rules(raw: Any) -> dict[str, FaultRule]:
    if not isinstance(raw, Mapping):
        raise ValueError("fault rules must be a JSON object {endpoint: rule}")
    return {endpoint: FaultRule.from_json(endpoint, rule) for endpoint, rule in raw.items()}


@dataclass(frozen=True)
class InjectedFault:
    status: int
    plain_body: bool
    retry_after_seconds: float


@dataclass(frozen=True)
class FaultPlan:
    latency_seconds: float = 0.0
    fault: InjectedFault | None = None


class FaultInjector:
    def __init__(self, rules: Mapping[str, Any], seed: int) -> None:
        self._lock = threading.Lock()
        self._rules = parse_rules(rules)
        self._rng = random.Random(seed)
        self._counters: dict[str, Counter[str]] = {}

    def replace_rules(self, raw: Any) -> None:
        rules = parse_rules(raw)  # all-or-nothing: validate before touching the live rules
        with self._lock:
            self._rules = rules

    def clear_rules(self) -> None:
        with self._lock:
            self._rules = {}

    def reset(self, rules: Mapping[str, Any], seed: int) -> None:
        parsed = parse_rules(rules)
        with self._lock:
            self._rules = parsed
            self._rng = random.Random(seed)
            self._counters = {}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            totals: Counter[str] = Counter()
            for counter in self._counters.values():
                totals.update(counter)
            return {
                "rules": {name: rule.to_json() for name, rule in self._rules.items()},
                "counters": {name: dict(counter) for name, counter in self._counters.items()},
                "totals": dict(totals),
            }

    def _count(self, endpoint: str, *kinds: str) -> None:
        counter = self._counters.setdefault(endpoint, Counter())
        for kind in kinds:
            counter[kind] += 1

    def _rule(self, endpoint: str) -> FaultRule | None:
        return self._rules.get(endpoint) or self._rules.get(WILDCARD)

    def plan(self, endpoint: str) -> FaultPlan:
        """Decide latency and any pre-handler fault for one request."""
        with self._lock:
            rule = self._rule(endpoint)
            if rule is None:
                return FaultPlan()
            latency = rule.latency_ms / 1000.0
            if latency > 0:
                self._count(endpoint, "latency")
            status: int | None = None
            if rule.fail_next > 0:
                rule.fail_next -= 1
                status = self._rng.choice(rule.error_statuses)
                self._count(endpoint, "fail_next")
            elif rule.rate_limit_rate > 0 and self._rng.random() < rule.rate_limit_rate:
                status = 429
            elif rule.error_rate > 0 and self._rng.random() < rule.error_rate:
                status = self._rng.choice(rule.error_statuses)
            if status is None:
                return FaultPlan(latency)
            if status == 429:
                self._count(endpoint, "rate_limited")
                return FaultPlan(latency, InjectedFault(429, False, rule.retry_after_seconds))
            plain = rule.plain_body_rate > 0 and self._rng.random() < rule.plain_body_rate
            self._count(endpoint, "error", f"error_{status}", *(("plain_body",) if plain else ()))
            return FaultPlan(latency, InjectedFault(status, plain, rule.retry_after_seconds))

    def should_drop(self, endpoint: str) -> bool:
        """Decide, after a committed success, whether to drop the connection."""
        with self._lock:
            rule = self._rule(endpoint)
            if rule is None or endpoint != "create_order":
                return False
            if rule.drop_next > 0:
                rule.drop_next -= 1
                drop = True
            else:
                drop = rule.drop_after_commit_rate > 0 and self._rng.random() < rule.drop_after_commit_rate
            if drop:
                self._count(endpoint, "drop_after_commit")
            return drop


# --- rendering ------------------------------------------------------------------------------

# What a load balancer / proxy in front of the API typically answers when the app cannot.
_PLAIN_BODIES: dict[int, tuple[str, str]] = {
    500: ("text/plain", "Internal Server Error"),
    502: ("text/html", "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
                       "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"),
    503: ("text/plain", "upstream connect error or disconnect/reset before headers. reset reason: overflow"),
    504: ("text/html", "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
                       "<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"),
}


def format_retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def render_fault(request: Request, fault: InjectedFault) -> Response:
    if fault.status == 429:
        retry_after = format_retry_after(fault.retry_after_seconds)
        return envelope.error(
            request, 429, "RATE_LIMITED", ERROR_CODES["RATE_LIMITED"][1],
            {"retry_after_seconds": fault.retry_after_seconds}, headers={"Retry-After": retry_after},
        )
    if fault.plain_body:
        media_type, body = _PLAIN_BODIES[fault.status]
        cls = HTMLResponse if media_type == "text/html" else PlainTextResponse
        return cls(body, status_code=fault.status)
    code = SERVER_ERROR_CODES[fault.status]
    return envelope.error(request, fault.status, code, ERROR_CODES[code][1])


class ConnectionDropped(Exception):
    """Raised after the response head is sent so the server aborts the connection."""


class DropConnectionResponse(Response):
    """Send the status line and headers of the real response, then abort without a body.

    uvicorn closes the transport when the app raises after ``http.response.start``; the client
    therefore reads a truncated response (httpx: RemoteProtocolError). The order was committed.
    """

    def __init__(self, committed: Response) -> None:
        super().__init__(status_code=committed.status_code)
        self.raw_headers = committed.raw_headers  # includes the real content-length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        raise ConnectionDropped("sandbox fault: connection dropped after the order was committed")

