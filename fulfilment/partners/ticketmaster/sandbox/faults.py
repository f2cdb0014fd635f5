"""Runtime faults, set per endpoint through ``PUT /admin/faults`` (or ``TM_SANDBOX_FAULTS``).

Endpoint names: ``list_events event_details availability reserve payment commit delete_cart
order_management unredeemed poll securerender`` and ``*`` (used when an endpoint has no rule of
its own; rules are not merged).

Rule fields (all optional)::

    latency_ms       >=0    added delay before the call is handled (asyncio.sleep: other calls run)
    trickle_ms       >=0    the answer (after the handler ran: a commit took effect) is sent slowly:
                            status and headers at once, then the body in ``trickle_chunks`` pieces,
                            ``trickle_ms`` before each one (counted ``trickle``)
    trickle_chunks   >=1    how many pieces a trickled body is cut into (default 10)
    fail_next        int    the next N calls answer a 5xx from error_statuses (nothing is done)
    error_rate       0..1   share of calls answering a 5xx from error_statuses (nothing is done)
    error_statuses   list   subset of 500, 502, 503, 504 (default [500])
    gateway_body     bool   injected 5xx carry a gateway's HTML page instead of the TM envelope
    drop_next        int    commit only: the next N successful commits take effect, then the
                            connection is dropped without an answer ("commit-then-drop")
    drop_rate        0..1   commit only: share of successful commits dropped that way
    late_next        int    commit only: the next N commits that would succeed answer a 5xx from
                            error_statuses at once, yet are processed ("processed anyway, maybe later")
    late_rate        0..1   commit only: share of commits that would succeed handled that way
    late_ms          >=0    commit only: how long after the 5xx such a commit takes effect (default 0)

Injected 5xx are decided after auth and quota, before niterun and the handler, so they never change
anything. Drops are decided after a commit answered 200 (or 202: then the polling URL is lost too).

Late commits are decided in the commit handler, after the body is validated, and only for a commit
that would succeed right now (checked under the state lock, nothing counted); a commit that fails
answers its normal error and uses up nothing. The 5xx (TM envelope, or the gateway page with
``gateway_body``) is answered at once, instead of any 202 polling answer, and such a commit is never
dropped. With ``late_ms == 0`` the commit takes effect before the 5xx is sent; otherwise it is an
asyncio task that sleeps ``late_ms`` of real time (asyncio.sleep: moving the admin clock or a
test's fake clock does not shorten it) and then commits exactly like a normal commit, validated
again at that moment: if the cart can no longer be committed (expired, deleted, committed meanwhile,
...) nothing happens and ``late_commits_failed`` is counted (not ``commits_on_*``/``recommits``: the
client made no such call), else ``commits_processed_late`` (both top-level in ``GET /admin/counts``;
``late_ms == 0`` counts ``commits_processed_late`` too). The pending processing is not a cart call: the commit call leaves
the cart's in-flight set when its 5xx is sent, so later calls on the cart are not concurrent ones.
The task lives in the server's event loop (see ``late``): a reset cancels pending ones, and a loop
that ends first (e.g. Starlette's TestClient used outside ``with``) loses them (a warning is logged).

Counters per endpoint: ``latency``, ``error``, ``error_<status>``, ``drop_after_commit``,
``late_commit``, ``late_commit_<status>``.
Randomness: ``random.Random(seed + 1)``, separate from the polling stream.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.responses import HTMLResponse, Response
from starlette.types import Receive, Scope, Send

from fulfilment.partners.trickle import TrickleFaults, parse_trickle

from . import assumed
from .assumed import ErrorSpec
from .errors import envelope
from .responses import Outcome

ENDPOINTS: tuple[str, ...] = (
    "list_events", "event_details", "availability", "reserve", "payment", "commit", "delete_cart",
    "order_management", "unredeemed", "poll", "securerender",
)
WILDCARD = "*"
INJECTABLE_STATUSES: tuple[int, ...] = (500, 502, 503, 504)
DROP_ENDPOINTS = ("commit", WILDCARD)  # where the commit-only fields (drop_*, late_*) may be set


@dataclass
class FaultRule:
    latency_ms: float = 0.0
    trickle_ms: float = 0.0
    trickle_chunks: int = 10
    fail_next: int = 0
    error_rate: float = 0.0
    error_statuses: list[int] = field(default_factory=lambda: [500])
    gateway_body: bool = False
    drop_next: int = 0
    drop_rate: float = 0.0
    late_next: int = 0
    late_rate: float = 0.0
    late_ms: float = 0.0

    @classmethod
    def from_json(cls, endpoint: str, raw: Any) -> FaultRule:
        if endpoint not in ENDPOINTS and endpoint != WILDCARD:
            raise ValueError(f"unknown endpoint {endpoint!r}; known: {[*ENDPOINTS, WILDCARD]}")
        if not isinstance(raw, Mapping):
            raise ValueError(f"rule for {endpoint!r} must be an object")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown rule fields for {endpoint!r}: {sorted(unknown)}")
        rule = cls()
        parse_trickle(endpoint, raw, rule)
        for key, high in (("latency_ms", None), ("error_rate", 1.0), ("drop_rate", 1.0), ("late_rate", 1.0),
                           ("late_ms", None)):
            if key in raw:
                value = raw[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
                        high is not None and value > high):
                    raise ValueError(f"{endpoint}.{key} must be a number >= 0" + (f" and <= {high}" if high else ""))
                setattr(rule, key, float(value))
        for key in ("fail_next", "drop_next", "late_next"):
            if key in raw:
                value = raw[key]
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{endpoint}.{key} must be a non-negative integer")
                setattr(rule, key, value)
        if "error_statuses" in raw:
            statuses = raw["error_statuses"]
            if (not isinstance(statuses, list) or not statuses
                    or any(isinstance(s, bool) or s not in INJECTABLE_STATUSES for s in statuses)):
                raise ValueError(f"{endpoint}.error_statuses must be a non-empty list from {list(INJECTABLE_STATUSES)}")
            rule.error_statuses = list(statuses)
        if "gateway_body" in raw:
            if not isinstance(raw["gateway_body"], bool):
                raise ValueError(f"{endpoint}.gateway_body must be true or false")
            rule.gateway_body = raw["gateway_body"]
        if endpoint not in DROP_ENDPOINTS and (rule.drop_next or rule.drop_rate):
            raise ValueError("drop_next/drop_rate only apply to commit (or '*')")
        if endpoint not in DROP_ENDPOINTS and (rule.late_next or rule.late_rate or rule.late_ms):
            raise ValueError(f"late_next/late_rate/late_ms only apply to commit (or '*'), not {endpoint!r}")
        return rule

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_rules(raw: Any) -> dict[str, FaultRule]:
    if not isinstance(raw, Mapping):
        raise ValueError("fault rules must be a JSON object {endpoint: rule}")
    return {endpoint: FaultRule.from_json(endpoint, rule) for endpoint, rule in raw.items()}


@dataclass(frozen=True)
class FaultPlan:
    latency_seconds: float = 0.0
    status: int | None = None
    gateway_body: bool = False


@dataclass(frozen=True)
class LatePlan:
    """A commit answered ``status`` at once and processed ``delay_seconds`` later (0: before the answer)."""

    status: int
    gateway_body: bool
    delay_seconds: float


class InjectedAnswer(Exception):
    """Raised by a handler to answer an injected 5xx (rendered by the pipeline like ``FaultPlan``'s)."""

    def __init__(self, status: int, gateway_body: bool) -> None:
        super().__init__(f"injected {status}")
        self.status = status
        self.gateway_body = gateway_body


class FaultBook(TrickleFaults):
    def __init__(self, lock: threading.RLock, rules: Mapping[str, Any], seed: int) -> None:
        self._lock = lock
        self._rules = parse_rules(rules)
        self._rng = random.Random(seed + 1)
        self._counters: dict[str, Counter[str]] = {}

    def reset(self, rules: Mapping[str, Any], seed: int) -> None:
        parsed = parse_rules(rules)
        with self._lock:
            self._rules = parsed
            self._rng = random.Random(seed + 1)
            self._counters = {}

    def replace_rules(self, raw: Any) -> None:
        rules = parse_rules(raw)  # all-or-nothing: validate before touching the live rules
        with self._lock:
            self._rules = rules

    def clear_rules(self) -> None:
        with self._lock:
            self._rules = {}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"rules": {name: rule.to_json() for name, rule in self._rules.items()},
                    "counters": {name: dict(counter) for name, counter in self._counters.items()}}

    def _count(self, endpoint: str, *kinds: str) -> None:
        counter = self._counters.setdefault(endpoint, Counter())
        for kind in kinds:
            counter[kind] += 1

    def _rule(self, endpoint: str) -> FaultRule | None:
        return self._rules.get(endpoint) or self._rules.get(WILDCARD)

    def latency(self, endpoint: str) -> float:
        with self._lock:
            rule = self._rule(endpoint)
            if rule is None or rule.latency_ms <= 0:
                return 0.0
            self._count(endpoint, "latency")
            return rule.latency_ms / 1000.0

    def plan(self, endpoint: str) -> FaultPlan:
        with self._lock:
            rule = self._rule(endpoint)
            if rule is None:
                return FaultPlan()
            status: int | None = None
            if rule.fail_next > 0:
                rule.fail_next -= 1
                status = self._rng.choice(rule.error_statuses)
            elif rule.error_rate > 0 and self._rng.random() < rule.error_rate:
                status = self._rng.choice(rule.error_statuses)
            if status is None:
                return FaultPlan()
            self._count(endpoint, "error", f"error_{status}")
            return FaultPlan(status=status, gateway_body=rule.gateway_body)

    def should_drop(self, endpoint: str) -> bool:
        with self._lock:
            rule = self._rule(endpoint)
            if rule is None or endpoint != "commit":
                return False
            if rule.drop_next > 0:
                rule.drop_next -= 1
                drop = True
            else:
                drop = rule.drop_rate > 0 and self._rng.random() < rule.drop_rate
            if drop:
                self._count(endpoint, "drop_after_commit")
            return drop

    def late_commit(self, endpoint: str) -> LatePlan | None:
        """For a commit that would succeed: answer a 5xx and process it (maybe later)? Uses up late_next."""
        with self._lock:
            rule = self._rule(endpoint)
            if rule is None or endpoint != "commit":
                return None
            if rule.late_next > 0:
                rule.late_next -= 1
            elif not (rule.late_rate > 0 and self._rng.random() < rule.late_rate):
                return None
            status = self._rng.choice(rule.error_statuses)
            self._count(endpoint, "late_commit", f"late_commit_{status}")
            return LatePlan(status=status, gateway_body=rule.gateway_body, delay_seconds=rule.late_ms / 1000.0)


_GATEWAY_PAGE = ("<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}"
                 "</h1></center>\r\n</body>\r\n</html>\r\n")


def injected_outcome(status: int) -> Outcome:
    spec = ErrorSpec(status, 10000 + status, assumed.INJECTED_MESSAGES[status])
    return Outcome(status, envelope(spec))


def gateway_response(status: int) -> Response:
    return HTMLResponse(_GATEWAY_PAGE.format(status=status, reason=assumed.INJECTED_MESSAGES[status]), status_code=status)


class ConnectionDropped(Exception):
    """Raised after the response head is sent so the server aborts the connection."""


class DropConnectionResponse(Response):
    """Send the status line and headers of the real response, then abort without a body.

    uvicorn closes the transport when the app raises after ``http.response.start``; the client reads
    a truncated response (httpx: RemoteProtocolError). The commit has taken effect.
    """

    def __init__(self, committed: Response) -> None:
        super().__init__(status_code=committed.status_code)
        self.raw_headers = committed.raw_headers  # includes the real content-length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        raise ConnectionDropped("sandbox fault: connection dropped after the commit took effect")
