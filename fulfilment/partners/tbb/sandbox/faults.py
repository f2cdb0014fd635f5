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
    trickle_ms              >=0    the answer (after the handler ran: an order is committed) is sent
                                   slowly: status and headers at once, then the body in
                                   ``trickle_chunks`` pieces with ``trickle_ms`` before each one, so
                                   each piece arrives well inside a client's read timeout
    trickle_chunks          >=1    how many pieces a trickled body is cut into (default 10)
    fail_next               int    the next N requests fail with a status from error_statuses
                                   (deterministic; 429 in the list gives RATE_LIMITED)
    stall_next              int    the next N requests hang for ``stall_ms`` before being handled
                                   (then handled normally; any endpoint, e.g. a stalling auth_token)
    stall_ms                >=0    how long a stalled request hangs (required > 0 with stall_next)
    drop_after_commit_rate  0..1   create_order only: commit the order, then drop the connection
    drop_next               int    create_order only: the next N successful orders are dropped
    respond_after_commit_ms >=0    create_order only: commit the order at once, then wait N ms
                                   before answering (the client may time out while the order exists)
    expiry_checked_first    bool   create_order only: a quote that is both consumed and expired
                                   answers 422 QUOTE_EXPIRED (default: QUOTE_ALREADY_CONSUMED)
    lookup_lag_seconds      >=0    list_orders only: orders created less than N seconds ago (sandbox
                                   clock) are invisible, not in data nor in pagination.total
    lookup_miss_rate        0..1   list_orders only: each matching order is left out at random
                                   (also from pagination.total: the answer looks like "no order")
    lookup_has_more_rate    0..1   list_orders only: answer an empty page with has_more=true and
                                   total > offset (the order "is on another page": outcome unknown)
    lookup_has_more_next    int    list_orders only: the next N answers are such a has_more page
                                   (deterministic, counted down before the rate is drawn)
    lookup_malformed_rate   0..1   list_orders only: a 200 whose body violates the envelope
    lookup_malformed_kinds  list   subset of the malformed bodies (default all): ``not_json`` (200
                                   text/html page), ``success_missing``, ``data_not_list`` (data is
                                   an object), ``data_null``, ``pagination_missing``,
                                   ``has_more_not_bool`` (has_more is "true"/"false", a
                                   string, and the string "false" is truthy)

"create_order only"/"list_orders only" fields are refused on other endpoints; on ``*`` they only
act on that endpoint.

Order of decisions for one request: latency and stall (both waited for, added), then fail_next,
then rate_limit_rate, then error_rate. All of these are decided BEFORE the handler runs, so an
injected error never commits anything. Drops are decided AFTER a successful (201) create_order: the
order exists and its quote is consumed, yet the client sees a transport error, which is exactly the
"unknown outcome" case a client must resolve with ``GET /v1/orders?quote_id=...``.
``respond_after_commit_ms`` is waited for after the commit too (before a drop, if both apply).
A trickle is decided last, for the answer the handler gave (an injected error or a dropped answer is
never trickled): a trickled create_order has committed its order before the first byte is sent.

The lookup faults make that resolution itself unreliable. They are decided inside list_orders after
the token and the query were accepted: lagging orders and missed orders (one draw per order) are
removed before pagination; then the answer is malformed (one draw per request), else an empty
has_more page (``lookup_has_more_next`` first, then one draw per request), else the normal page.
With lag or misses, a well-formed empty lookup is not proof that no order exists.

Counters (per endpoint): ``latency``, ``stall``, ``trickle``, ``fail_next``, ``rate_limited``, ``error``,
``error_<status>``, ``plain_body``, ``drop_after_commit``, ``respond_after_commit``,
``expiry_checked_first`` (only when the switched order changed the answer), ``lookup_lag`` and
``lookup_miss`` (one per hidden order), ``lookup_has_more``, ``lookup_malformed`` and
``malformed_<kind>``.

Randomness comes from ``random.Random(seed)``; every injected fault is counted per endpoint/kind.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from fulfilment.partners.sandbox_kit import faults as kit
from fulfilment.partners.sandbox_kit.faults import WILDCARD
from fulfilment.partners.sandbox_kit.trickle import parse_trickle

from . import envelope
from .errors import ERROR_CODES, SERVER_ERROR_CODES

ENDPOINTS: tuple[str, ...] = (
    "auth_token", "list_events", "get_event", "list_sections", "list_rows",
    "create_quote", "create_order", "get_order", "list_orders",
)
INJECTABLE_STATUSES: tuple[int, ...] = (429, 500, 502, 503, 504)
DROP_ENDPOINTS = ("create_order", WILDCARD)
LOOKUP_ENDPOINTS = ("list_orders", WILDCARD)
MALFORMED_KINDS: tuple[str, ...] = (
    "not_json", "success_missing", "data_not_list", "data_null", "pagination_missing", "has_more_not_bool",
)
_RATE_FIELDS = ("error_rate", "plain_body_rate", "rate_limit_rate", "drop_after_commit_rate",
                "lookup_miss_rate", "lookup_has_more_rate", "lookup_malformed_rate")


@dataclass
class CreateOrderFaults:
    """The rule fields that act on create_order only (refused on other endpoints, see ``from_json``)."""

    drop_after_commit_rate: float = 0.0
    respond_after_commit_ms: float = 0.0
    expiry_checked_first: bool = False


@dataclass
class LookupFaults:
    """The rule fields that act on list_orders only: a lookup that lags, misses, pages or breaks."""

    lookup_lag_seconds: float = 0.0
    lookup_miss_rate: float = 0.0
    lookup_has_more_rate: float = 0.0
    lookup_has_more_next: int = 0
    lookup_malformed_rate: float = 0.0
    lookup_malformed_kinds: list[str] = field(default_factory=lambda: list(MALFORMED_KINDS))


@dataclass
class FaultRule(kit.BaseRule, CreateOrderFaults, LookupFaults):
    error_rate: float = 0.0
    plain_body_rate: float = 0.5
    rate_limit_rate: float = 0.0
    retry_after_seconds: float = 1
    stall_ms: float = 0.0
    error_statuses: list[int] = field(default_factory=lambda: [500, 502, 503, 504])

    @classmethod
    def from_json(cls, endpoint: str, raw: Any) -> FaultRule:
        """Validate one rule; ValueError with a readable reason otherwise."""
        kit.check_rule(cls.__dataclass_fields__, endpoint, raw, [*ENDPOINTS, WILDCARD])
        rule = cls()
        for key in _RATE_FIELDS:
            if key in raw:
                setattr(rule, key, _number(endpoint, key, raw[key], low=0.0, high=1.0))
        for key in ("latency_ms", "stall_ms", "respond_after_commit_ms", "lookup_lag_seconds"):
            if key in raw:
                setattr(rule, key, _number(endpoint, key, raw[key], low=0.0))
        if "retry_after_seconds" in raw:
            value = _number(endpoint, "retry_after_seconds", raw["retry_after_seconds"], low=0.0)
            rule.retry_after_seconds = int(value) if float(value).is_integer() else value
        kit.set_flag(endpoint, raw, rule, "expiry_checked_first")
        kit.set_counts(endpoint, raw, rule, ("fail_next", "drop_next", "stall_next", "lookup_has_more_next"))
        kit.set_choices(endpoint, raw, rule, "error_statuses", INJECTABLE_STATUSES)
        kit.set_choices(endpoint, raw, rule, "lookup_malformed_kinds", MALFORMED_KINDS)
        parse_trickle(endpoint, raw, rule)
        if rule.stall_next and not rule.stall_ms:
            raise ValueError(f"{endpoint}.stall_next needs stall_ms > 0")
        default = cls()
        for names, allowed, target in ((_CREATE_ORDER_FIELDS, DROP_ENDPOINTS, "create_order"),
                                       (_LOOKUP_FIELDS, LOOKUP_ENDPOINTS, "list_orders")):
            misplaced = [f for f in names if getattr(rule, f) != getattr(default, f)]
            if endpoint not in allowed and misplaced:
                raise ValueError(f"{'/'.join(misplaced)} only apply to {target} (or '*')")
        return rule




# Fields that only make sense on one endpoint (refused elsewhere unless left at their default).
_CREATE_ORDER_FIELDS = (*(f.name for f in fields(CreateOrderFaults)), "drop_next")
_LOOKUP_FIELDS = tuple(f.name for f in fields(LookupFaults))

def _number(endpoint: str, key: str, value: Any, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{endpoint}.{key} must be a number")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{endpoint}.{key} must be {bound}")
    return value


@dataclass(frozen=True)
class InjectedFault:
    status: int
    plain_body: bool
    retry_after_seconds: float


@dataclass(frozen=True)
class FaultPlan:
    latency_seconds: float = 0.0
    fault: InjectedFault | None = None
    stall_seconds: float = 0.0

    @property
    def delay_seconds(self) -> float:
        return self.latency_seconds + self.stall_seconds


@dataclass(frozen=True)
class LookupPlan:
    """What list_orders does to one answer (decided after the token and query were accepted)."""

    lag_seconds: float = 0.0
    miss_rate: float = 0.0
    has_more: bool = False
    malformed: str | None = None


class FaultInjector(kit.FaultBook[FaultRule]):
    def __init__(self, rules: Mapping[str, Any], seed: int) -> None:
        super().__init__(threading.Lock(), rules, seed)

    def parse_rule(self, endpoint: str, raw: Any) -> FaultRule:
        return FaultRule.from_json(endpoint, raw)

    def snapshot(self) -> dict[str, Any]:
        snapshot = super().snapshot()
        totals: Counter[str] = Counter()
        for counter in snapshot["counters"].values():
            totals.update(counter)
        return {**snapshot, "totals": dict(totals)}

    def plan(self, endpoint: str) -> FaultPlan:
        """Decide latency and any pre-handler fault for one request."""
        with self._lock:
            rule = self._rule(endpoint)
            if rule is None:
                return FaultPlan()
            latency = rule.latency_ms / 1000.0
            if latency > 0:
                self._count(endpoint, "latency")
            stall = 0.0
            if rule.stall_next > 0:
                rule.stall_next -= 1
                stall = rule.stall_ms / 1000.0
                self._count(endpoint, "stall")
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
                return FaultPlan(latency, stall_seconds=stall)
            if status == 429:
                self._count(endpoint, "rate_limited")
                return FaultPlan(latency, InjectedFault(429, False, rule.retry_after_seconds), stall)
            plain = rule.plain_body_rate > 0 and self._rng.random() < rule.plain_body_rate
            self._count(endpoint, "error", f"error_{status}", *(("plain_body",) if plain else ()))
            return FaultPlan(latency, InjectedFault(status, plain, rule.retry_after_seconds), stall)

    def respond_after_commit_seconds(self, endpoint: str) -> float:
        """After a committed create_order: how long to hold the answer back (0 = answer now)."""
        return self.delay(endpoint, "respond_after_commit_ms", "respond_after_commit", only="create_order")

    def expiry_checked_first(self, endpoint: str) -> bool:
        with self._lock:
            rule = self._rule(endpoint)
            return rule is not None and endpoint == "create_order" and rule.expiry_checked_first

    def record(self, endpoint: str, kind: str) -> None:
        """Count a fault whose effect is only known by the handler (e.g. expiry_checked_first)."""
        with self._lock:
            self._count(endpoint, kind)

    def plan_lookup(self, endpoint: str) -> LookupPlan:
        """Decide the list_orders faults for one answer: malformed, else has_more, else lag/miss."""
        with self._lock:
            rule = self._rule(endpoint)
            if rule is None or endpoint != "list_orders":
                return LookupPlan()
            plan = LookupPlan(lag_seconds=rule.lookup_lag_seconds, miss_rate=rule.lookup_miss_rate)
            if rule.lookup_malformed_rate > 0 and self._rng.random() < rule.lookup_malformed_rate:
                kind = self._rng.choice(rule.lookup_malformed_kinds)
                self._count(endpoint, "lookup_malformed", f"malformed_{kind}")
                return LookupPlan(plan.lag_seconds, plan.miss_rate, malformed=kind)
            if self.take(rule, "lookup_has_more_next", "lookup_has_more_rate"):
                self._count(endpoint, "lookup_has_more")
                return LookupPlan(plan.lag_seconds, plan.miss_rate, has_more=True)
            return plan

    def hides_order(self, endpoint: str, plan: LookupPlan, created_at: datetime, now: datetime) -> bool:
        """Whether one matching order is left out of a lookup (lagging index, or a random miss)."""
        if plan.lag_seconds > 0 and (now - created_at).total_seconds() < plan.lag_seconds:
            self.record(endpoint, "lookup_lag")
            return True
        if plan.miss_rate > 0:
            with self._lock:
                missed = self._rng.random() < plan.miss_rate
                if missed:
                    self._count(endpoint, "lookup_miss")
            return missed
        return False

    def should_drop(self, endpoint: str) -> bool:
        """Decide, after a committed success, whether to drop the connection."""
        return self.drop(endpoint, "create_order", "drop_next", "drop_after_commit_rate")


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


_NOT_JSON_PAGE = ("<!DOCTYPE html>\r\n<html><head><title>Just a moment...</title></head>\r\n"
                  "<body><h1>Checking your browser before accessing api.ticketbuyback.com</h1></body></html>\r\n")


def render_lookup(request: Request, plan: LookupPlan, items: list[Any], total: int, limit: int,
                  offset: int) -> Response:
    """The list_orders answer as the lookup faults shape it (the normal page when none apply)."""
    if plan.malformed is None and not plan.has_more:
        return envelope.paginated(request, items, total, limit, offset)
    if plan.malformed == "not_json":
        return HTMLResponse(_NOT_JSON_PAGE, status_code=200)
    pagination: dict[str, Any] = {"total": total, "limit": limit, "offset": offset,
                                  "has_more": offset + len(items) < total}
    body: dict[str, Any] = {"success": True, "data": items, "pagination": pagination, "meta": envelope.meta(request)}
    if plan.has_more:
        # The order (if any) "is on another page": nothing here, yet more is announced.
        body["data"] = []
        pagination.update(total=max(total, offset + 1), has_more=True)
    elif plan.malformed == "success_missing":
        del body["success"]
    elif plan.malformed == "data_not_list":
        body["data"] = {"orders": items}
    elif plan.malformed == "data_null":
        body["data"] = None
    elif plan.malformed == "pagination_missing":
        del body["pagination"]
    elif plan.malformed == "has_more_not_bool":
        pagination["has_more"] = "true" if pagination["has_more"] else "false"
    return JSONResponse(body, status_code=200)


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
