"""Helpers shared by the hypothesis state machines (tests/integration/test_*_properties.py)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from typing import Any

from hypothesis import event as _event
from hypothesis import note as _note
from hypothesis.errors import InvalidArgument
from sqlalchemy import Connection, text

LIVE_CLAIM_SQL = text("SELECT coalesce(claimed_until > now(), false) FROM purchases WHERE id = :id")


def event(text: str) -> None:
    try:
        _event(text)
    except InvalidArgument:  # outside hypothesis: a scripted regression or replayed example
        pass


def note(text: str) -> None:
    try:
        _note(text)
    except InvalidArgument:
        print(text)


def guarded(function):  # type: ignore[no-untyped-def]
    """Mark the machine unhealthy while a rule runs: if it raises, teardown skips the liveness run."""

    @functools.wraps(function)
    def wrapper(self, **kwargs):  # type: ignore[no-untyped-def]
        self.healthy = False
        function(self, **kwargs)
        self.healthy = True

    return wrapper


def live_claim(reader: Connection, purchase_id: uuid.UUID) -> bool:
    """Does a worker hold a live claim (lease) on the purchase now?"""
    return bool(reader.execute(LIVE_CLAIM_SQL, {"id": purchase_id}).scalar())


def replay(machine: Any, steps: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Run one fixed example of a hypothesis state machine: its rules in this order with these
    arguments, every invariant after each, then its teardown (the liveness run).  Hypothesis has no
    `@example` for stateful tests; this is one, written as hypothesis prints a failing example."""
    invariants = [name for name in dir(type(machine))
                  if getattr(getattr(type(machine), name), "hypothesis_stateful_invariant", None) is not None]
    try:
        for invariant_name in invariants:
            getattr(machine, invariant_name)()
        for rule, arguments in steps:
            getattr(machine, rule)(**arguments)
            for invariant_name in invariants:
                getattr(machine, invariant_name)()
    except BaseException:
        machine.close()
        raise
    machine.teardown()
