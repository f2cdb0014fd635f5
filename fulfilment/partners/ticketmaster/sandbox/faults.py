"""Runtime faults, set per endpoint through ``PUT /admin/faults`` (or ``TM_SANDBOX_FAULTS``).

Endpoint names: ``list_events event_details availability reserve payment commit delete_cart
order_management unredeemed poll securerender`` and ``*`` (used when an endpoint has no rule of
its own; rules are not merged).

Polls, per operation polled: ``poll_availability poll_reserve poll_commit poll_delete_cart
poll_order_management`` name the polls of one operation's polling URLs; a poll uses the first rule
found of ``poll_<operation>``, ``poll``, ``*`` (its counters are kept under the name whose rule it
used, e.g. ``poll_commit``). A poll of an unknown URL uses ``poll``.

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
    stall_next       int    the next N calls hang ``stall_ms`` (real time) before they are handled, then
                            are handled normally: a client whose read timeout is shorter has given up.
                            On a poll nothing is lost: the same polling URL answers the next poll
                            as before (a re-read); fail_next/error_rate on polls leave it alive too
    stall_ms         >0     how long a stalled call hangs (default 30000, past any sane read timeout)
    answer_after_next int   the next N calls that succeed (2xx: a commit's 200 with order number and
                            token, or its 202 with a polling URL) are processed at once and their
                            answer is sent only ``answer_after_ms`` later ("an answer that arrives
                            after the lease"; the client may have given up long before)
    answer_after_rate 0..1  share of successful calls answered that way
    answer_after_ms  >0     how long the answer waits (real time, default 30000); counted per
                            endpoint in ``late_answers`` (``GET /admin/counts``). The call leaves
                            its cart's in-flight set before the wait: its work is done
    status_next      int    the next N calls answer ``status`` with the TM envelope (nothing done):
                            ``event_details`` (deprecated since Oct 2016, per-IP quota) 404 or 403,
                            ``unredeemed`` 403 (the apikey/IP is not allow-listed), or any endpoint
    status_rate      0..1   share of calls answered that way
    status           int    403 or 404 (default 404); envelopes ``assumed.STATUS_FAULTS``. Never on
                            polls (a 404/410 there proves the URL is gone: use ``polling_ttl_seconds``
                            or ``DELETE /admin/polling/{id}``); a ``*`` rule's status skips polls
    unavailable_next int    the next N calls answer 503 20001 "Ticketing system is down/unavailable"
                            whatever the time (not niterun: at noon too); nothing done, so a
                            commit refused that way leaves its cart held (and paid)
    unavailable_seconds >=0 every call answers that 503 20001 for this many seconds of the sandbox
                            clock, from the first call the rule meets (counted per endpoint as
                            ``unavailable``, in total as ``unavailable_refusals``)

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
``late_commit``, ``late_commit_<status>``, ``stall``, ``answer_after``, ``status``, ``status_<status>``,
``unavailable``.
Randomness: ``random.Random(seed + 1)``, separate from the polling stream.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
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
POLLED: tuple[str, ...] = ("availability", "reserve", "commit", "delete_cart", "order_management")
POLL_ENDPOINTS: tuple[str, ...] = tuple(f"poll_{name}" for name in POLLED)
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
    stall_next: int = 0
    stall_ms: float = 30000.0
    answer_after_next: int = 0
    answer_after_rate: float = 0.0
    answer_after_ms: float = 30000.0
    status_next: int = 0
    status_rate: float = 0.0
    status: int = 404
    unavailable_next: int = 0
    unavailable_seconds: float = 0.0

    @classmethod
    def from_json(cls, endpoint: str, raw: Any) -> FaultRule:
        if endpoint not in ENDPOINTS and endpoint not in POLL_ENDPOINTS and endpoint != WILDCARD:
            raise ValueError(f"unknown endpoint {endpoint!r}; known: {[*ENDPOINTS, *POLL_ENDPOINTS, WILDCARD]}")
        if not isinstance(raw, Mapping):
            raise ValueError(f"rule for {endpoint!r} must be an object")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown rule fields for {endpoint!r}: {sorted(unknown)}")
        rule = cls()
        parse_trickle(endpoint, raw, rule)
        for key, high in (("latency_ms", None), ("error_rate", 1.0), ("drop_rate", 1.0), ("late_rate", 1.0),
                           ("late_ms", None), ("unavailable_seconds", None)):
            if key in raw:
                value = raw[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
                        high is not None and value > high):
                    raise ValueError(f"{endpoint}.{key} must be a number >= 0" + (f" and <= {high}" if high else ""))
                setattr(rule, key, float(value))
        for key in ("stall_ms", "answer_after_ms"):
            if key in raw:
                value = raw[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                    raise ValueError(f"{endpoint}.{key} must be a number > 0")
                setattr(rule, key, float(value))
        for key in ("answer_after_rate", "status_rate"):
            if key in raw:
                value = raw[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                    raise ValueError(f"{endpoint}.{key} must be a number >= 0 and <= 1")
                setattr(rule, key, float(value))
        if "status" in raw:
            if isinstance(raw["status"], bool) or raw["status"] not in assumed.STATUS_FAULTS:
                raise ValueError(f"{endpoint}.status must be one of {sorted(assumed.STATUS_FAULTS)}")
            rule.status = raw["status"]
        for key in ("fail_next", "drop_next", "late_next", "stall_next", "answer_after_next", "status_next",
                    "unavailable_next"):
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
        if _is_poll(endpoint) and (rule.status_next or rule.status_rate):
            raise ValueError(f"{endpoint}: status_next/status_rate never apply to polls (a 404/410 there means the "
                             "URL is gone: use polling_ttl_seconds or DELETE /admin/polling/{id})")
        if endpoint not in DROP_ENDPOINTS and (rule.drop_next or rule.drop_rate):
            raise ValueError("drop_next/drop_rate only apply to commit (or '*')")
        if endpoint not in DROP_ENDPOINTS and (rule.late_next or rule.late_rate or rule.late_ms):
            raise ValueError(f"late_next/late_rate/late_ms only apply to commit (or '*'), not {endpoint!r}")
        return rule

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _is_poll(endpoint: str) -> bool:
    return endpoint == "poll" or endpoint in POLL_ENDPOINTS


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
        self._spans: dict[int, datetime] = {}  # id(rule) -> when its unavailable_seconds span ends

    def reset(self, rules: Mapping[str, Any], seed: int) -> None:
        parsed = parse_rules(rules)
        with self._lock:
            self._rules = parsed
            self._rng = random.Random(seed + 1)
            self._counters = {}
            self._spans = {}

    def replace_rules(self, raw: Any) -> None:
        rules = parse_rules(raw)  # all-or-nothing: validate before touching the live rules
        with self._lock:
            self._rules = rules
            self._spans = {}

    def clear_rules(self) -> None:
        with self._lock:
            self._rules = {}
            self._spans = {}

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

    def poll_name(self, operation: str | None) -> str:
        """The fault name of a poll of ``operation``'s polling URL: ``poll_<operation>`` when it has a
        rule of its own, else ``poll`` (which falls back to ``*``)."""
        name = f"poll_{operation}"
        with self._lock:
            return name if operation is not None and name in self._rules else "poll"

    def stall(self, endpoint: str) -> float:
        """Seconds this call hangs before it is handled (uses up stall_next); 0 when it does not."""
        with self._lock:
            rule = self._rule(endpoint)
            if rule is None or rule.stall_next <= 0:
                return 0.0
            rule.stall_next -= 1
            self._count(endpoint, "stall")
            return rule.stall_ms / 1000.0

    def _meets(self, endpoint: str, fault: str) -> FaultRule | None:
        """The rule if this call meets its ``<fault>_next`` (used up by one) or ``<fault>_rate``."""
        rule = self._rule(endpoint)
        if rule is None:
            return None
        left = getattr(rule, f"{fault}_next")
        if left > 0:
            setattr(rule, f"{fault}_next", left - 1)
            return rule
        rate = getattr(rule, f"{fault}_rate")
        return rule if rate > 0 and self._rng.random() < rate else None

    def refusal(self, endpoint: str) -> int | None:
        """The 403/404 this call answers instead of being handled (uses up status_next), or None."""
        if _is_poll(endpoint):
            return None
        with self._lock:
            rule = self._meets(endpoint, "status")
            if rule is None:
                return None
            self._count(endpoint, "status", f"status_{rule.status}")
            return rule.status

    def unavailable(self, endpoint: str, now: datetime) -> bool:
        """Does this call answer 503 20001 (uses up unavailable_next; starts unavailable_seconds)?"""
        with self._lock:
            rule = self._rule(endpoint)
            if rule is None:
                return False
            if rule.unavailable_next > 0:
                rule.unavailable_next -= 1
            elif rule.unavailable_seconds > 0:
                ends = self._spans.setdefault(id(rule), now + timedelta(seconds=rule.unavailable_seconds))
                if now >= ends:
                    return False
            else:
                return False
            self._count(endpoint, "unavailable")
            return True

    def answer_after(self, endpoint: str) -> float:
        """For a call that succeeded: seconds its answer waits (uses up answer_after_next); 0: none."""
        with self._lock:
            rule = self._meets(endpoint, "answer_after")
            if rule is None:
                return 0.0
            self._count(endpoint, "answer_after")
            return rule.answer_after_ms / 1000.0

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
