"""Helpers shared by the hypothesis state machines (tests/integration/test_*_properties.py)."""

from __future__ import annotations

import functools
import uuid

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
