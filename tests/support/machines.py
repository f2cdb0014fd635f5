"""Helpers shared by the hypothesis state machines (tests/integration/test_*_properties.py)."""

from __future__ import annotations

import functools

from hypothesis import event as _event
from hypothesis import note as _note
from hypothesis.errors import InvalidArgument


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
