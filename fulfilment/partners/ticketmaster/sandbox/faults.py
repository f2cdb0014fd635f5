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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from starlette.responses import HTMLResponse, Response

from fulfilment.partners.sandbox_kit import faults as kit
from fulfilment.partners.sandbox_kit.faults import WILDCARD
from fulfilment.partners.sandbox_kit.trickle import parse_trickle

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
INJECTABLE_STATUSES: tuple[int, ...] = (500, 502, 503, 504)
DROP_ENDPOINTS = ("commit", WILDCARD)  # where the commit-only fields (drop_*, late_*) may be set


@dataclass
class FaultRule(kit.BaseRule):
    error_rate: float = 0.0
    error_statuses: list[int] = field(default_factory=lambda: [500])
    gateway_body: bool = False
    drop_rate: float = 0.0
    late_next: int = 0
    late_rate: float = 0.0
    late_ms: float = 0.0
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
        kit.check_rule(cls.__dataclass_fields__, endpoint, raw, [*ENDPOINTS, *POLL_ENDPOINTS, WILDCARD])
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
        kit.set_counts(endpoint, raw, rule, ("fail_next", "drop_next", "late_next", "stall_next", "answer_after_next",
                                            "status_next", "unavailable_next"))
        kit.set_choices(endpoint, raw, rule, "error_statuses", INJECTABLE_STATUSES)
        kit.set_flag(endpoint, raw, rule, "gateway_body")
        if _is_poll(endpoint) and (rule.status_next or rule.status_rate):
            raise ValueError(f"{endpoint}: status_next/status_rate never apply to polls (a 404/410 there means the "
                             "URL is gone: use polling_ttl_seconds or DELETE /admin/polling/{id})")
        if endpoint not in DROP_ENDPOINTS and (rule.drop_next or rule.drop_rate):
            raise ValueError("drop_next/drop_rate only apply to commit (or '*')")
        if endpoint not in DROP_ENDPOINTS and (rule.late_next or rule.late_rate or rule.late_ms):
            raise ValueError(f"late_next/late_rate/late_ms only apply to commit (or '*'), not {endpoint!r}")
        return rule



def _is_poll(endpoint: str) -> bool:
    return endpoint == "poll" or endpoint in POLL_ENDPOINTS


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


class FaultBook(kit.FaultBook[FaultRule]):
    def __init__(self, lock: threading.RLock, rules: Mapping[str, Any], seed: int) -> None:
        self._spans: dict[int, datetime] = {}  # id(rule) -> when its unavailable_seconds span ends
        super().__init__(lock, rules, seed)

    def parse_rule(self, endpoint: str, raw: Any) -> FaultRule:
        return FaultRule.from_json(endpoint, raw)

    def random(self, seed: int) -> random.Random:
        return random.Random(seed + 1)

    def forget(self) -> None:
        self._spans = {}

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
        return rule if rule is not None and self.take(rule, f"{fault}_next", f"{fault}_rate") else None

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
        return self.delay(endpoint, "latency_ms", "latency")

    def plan(self, endpoint: str) -> FaultPlan:
        with self._lock:
            rule = self._rule(endpoint)
            if rule is None:
                return FaultPlan()
            if not self.take(rule, "fail_next", "error_rate"):
                return FaultPlan()
            status = self._rng.choice(rule.error_statuses)
            self._count(endpoint, "error", f"error_{status}")
            return FaultPlan(status=status, gateway_body=rule.gateway_body)

    def should_drop(self, endpoint: str) -> bool:
        return self.drop(endpoint, "commit", "drop_next", "drop_rate")

    def late_commit(self, endpoint: str) -> LatePlan | None:
        """For a commit that would succeed: answer a 5xx and process it (maybe later)? Uses up late_next."""
        with self._lock:
            rule = self._rule(endpoint)
            if rule is None or endpoint != "commit":
                return None
            if not self.take(rule, "late_next", "late_rate"):
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
