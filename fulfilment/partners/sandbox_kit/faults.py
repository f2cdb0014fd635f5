"""The bookkeeping of a sandbox's runtime faults; each sandbox's ``faults`` module says which faults
its partner's endpoints can meet, what they do and in which order they are decided.

A fault book holds one rule per endpoint name, plus ``*``: a call uses the rule of its own endpoint
if there is one, otherwise the ``*`` rule (rules are not merged). Rules are replaced all or nothing
(validated before the live rules are touched). Randomness comes from one seeded ``random.Random``
per book, so a seed replays the same faults; every injected fault is counted per endpoint and kind.
A ``<fault>_next`` count is used up before its ``<fault>_rate`` is drawn (``take``).

Also here: the validation helpers of the rules' JSON (readable ``ValueError``s naming
``endpoint.field``), and the connection dropped after a commit took effect.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .trickle import Trickle

WILDCARD = "*"


@dataclass
class BaseRule:
    """The fields every sandbox's fault rule has (each sandbox's rule adds its partner's faults)."""

    latency_ms: float = 0.0
    trickle_ms: float = 0.0
    trickle_chunks: int = 10
    fail_next: int = 0
    stall_next: int = 0
    drop_next: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


RuleT = TypeVar("RuleT", bound=BaseRule)


# --- validating a rule's JSON --------------------------------------------------------------


def check_rule(fields: Iterable[str], endpoint: str, raw: Any, known: list[str]) -> None:
    """The endpoint is one of ``known`` (``*`` included), the rule an object naming only ``fields``."""
    if endpoint not in known:
        raise ValueError(f"unknown endpoint {endpoint!r}; known: {known}")
    if not isinstance(raw, Mapping):
        raise ValueError(f"rule for {endpoint!r} must be an object")
    unknown = set(raw) - set(fields)
    if unknown:
        raise ValueError(f"unknown rule fields for {endpoint!r}: {sorted(unknown)}")


def set_counts(endpoint: str, raw: Mapping[str, Any], rule: Any, keys: Iterable[str]) -> None:
    """Copy the non-negative integers ``keys`` (``*_next`` counts) from ``raw`` onto ``rule``."""
    for key in keys:
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{endpoint}.{key} must be a non-negative integer")
            setattr(rule, key, value)


def set_flag(endpoint: str, raw: Mapping[str, Any], rule: Any, key: str) -> None:
    if key in raw:
        if not isinstance(raw[key], bool):
            raise ValueError(f"{endpoint}.{key} must be true or false")
        setattr(rule, key, raw[key])


def set_choices(endpoint: str, raw: Mapping[str, Any], rule: Any, key: str, allowed: tuple[Any, ...]) -> None:
    """A non-empty list drawn from ``allowed`` (booleans refused, ``True == 1`` notwithstanding)."""
    if key in raw:
        values = raw[key]
        if (not isinstance(values, list) or not values
                or any(isinstance(v, bool) or v not in allowed for v in values)):
            raise ValueError(f"{endpoint}.{key} must be a non-empty list from {list(allowed)}")
        setattr(rule, key, list(values))


def parse_rules(raw: Any, parse_rule: Callable[[str, Any], RuleT]) -> dict[str, RuleT]:
    if not isinstance(raw, Mapping):
        raise ValueError("fault rules must be a JSON object {endpoint: rule}")
    return {endpoint: parse_rule(endpoint, rule) for endpoint, rule in raw.items()}


# --- the book ------------------------------------------------------------------------------


class FaultBook(Generic[RuleT]):
    """Rules per endpoint, their seeded randomness and counters, under ``lock`` (a sandbox may share
    its state lock).  Subclasses parse their partner's rules (``parse_rule``) and decide its faults."""

    _lock: threading.Lock | threading.RLock

    def __init__(self, lock: threading.Lock | threading.RLock, rules: Mapping[str, Any], seed: int) -> None:
        self._lock = lock
        self._rules: dict[str, RuleT] = parse_rules(rules, self.parse_rule)
        self._rng = self.random(seed)
        self._counters: dict[str, Counter[str]] = {}

    def parse_rule(self, endpoint: str, raw: Any) -> RuleT:
        raise NotImplementedError

    def random(self, seed: int) -> random.Random:
        return random.Random(seed)

    def forget(self) -> None:
        """Drop what the book remembers of its rules (called whenever they change, under the lock)."""

    def reset(self, rules: Mapping[str, Any], seed: int) -> None:
        parsed = parse_rules(rules, self.parse_rule)
        with self._lock:
            self._rules = parsed
            self._rng = self.random(seed)
            self._counters = {}
            self.forget()

    def replace_rules(self, raw: Any) -> None:
        rules = parse_rules(raw, self.parse_rule)  # all-or-nothing: validate before touching the live rules
        with self._lock:
            self._rules = rules
            self.forget()

    def clear_rules(self) -> None:
        with self._lock:
            self._rules = {}
            self.forget()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"rules": {name: rule.to_json() for name, rule in self._rules.items()},
                    "counters": {name: dict(counter) for name, counter in self._counters.items()}}

    def _count(self, endpoint: str, *kinds: str) -> None:
        counter = self._counters.setdefault(endpoint, Counter())
        for kind in kinds:
            counter[kind] += 1

    def _rule(self, endpoint: str) -> RuleT | None:
        return self._rules.get(endpoint) or self._rules.get(WILDCARD)

    def take(self, rule: Any, next_field: str, rate_field: str) -> bool:
        """Does this call meet the fault: its ``next_field`` count (used up by one), else a draw
        under ``rate_field`` (no draw when the rate is 0)?  Call it under the lock."""
        left = getattr(rule, next_field)
        if left > 0:
            setattr(rule, next_field, left - 1)
            return True
        rate = getattr(rule, rate_field)
        return bool(rate > 0 and self._rng.random() < rate)

    def delay(self, endpoint: str, ms_field: str, kind: str, only: str | None = None) -> float:
        """Seconds of the rule's ``ms_field`` (0: none; counted ``kind``), on ``only`` that endpoint if given."""
        with self._lock:
            rule = self._rule(endpoint)
            if rule is None or (only is not None and endpoint != only) or getattr(rule, ms_field) <= 0:
                return 0.0
            self._count(endpoint, kind)
            return float(getattr(rule, ms_field)) / 1000.0

    def trickle(self, endpoint: str) -> Trickle | None:
        """How to send this endpoint's answer slowly (None: at once); counted ``trickle``."""
        with self._lock:
            rule = self._rule(endpoint)
            if rule is None or rule.trickle_ms <= 0:
                return None
            self._count(endpoint, "trickle")
            return Trickle(rule.trickle_chunks, rule.trickle_ms / 1000.0)

    def drop(self, endpoint: str, committing: str, next_field: str, rate_field: str) -> bool:
        """Decide, after a committed success of ``committing``, whether to drop the connection
        (counted ``drop_after_commit``)."""
        with self._lock:
            rule = self._rule(endpoint)
            if rule is None or endpoint != committing:
                return False
            dropped = self.take(rule, next_field, rate_field)
            if dropped:
                self._count(endpoint, "drop_after_commit")
            return dropped


# --- the dropped connection ----------------------------------------------------------------


class ConnectionDropped(Exception):
    """Raised after the response head is sent so the server aborts the connection."""


class DropConnectionResponse(Response):
    """Send the status line and headers of the real response, then abort without a body.

    uvicorn closes the transport when the app raises after ``http.response.start``; the client
    therefore reads a truncated response (httpx: RemoteProtocolError). What was committed stays
    committed: ``done`` says what (e.g. "the order was committed").
    """

    def __init__(self, committed: Response, done: str) -> None:
        super().__init__(status_code=committed.status_code)
        self.raw_headers = committed.raw_headers  # includes the real content-length
        self._done = done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        raise ConnectionDropped(f"sandbox fault: connection dropped after {self._done}")
