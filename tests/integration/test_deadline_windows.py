"""Deadline warning windows finer than deadline_flags.window_hours (numeric(8,2)) keeps them.

Issue 7: with DEADLINE_WARNING_HOURS=0.333 the flag was stored as 0.33 but the scheduler's
query compared it with the float 0.333, so a flagged purchase matched again on every tick:
it took a place in each batch (and a row lock), and purchases after it were never flagged.
These tests use a database of their own, so that no other test's purchase is in a window.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import select, text

from fulfilment import state_machine
from fulfilment.db import session_scope
from fulfilment.deadlines import flag_near_deadlines, window_hours
from fulfilment.settings import get_settings
from fulfilment.state_machine import State
from models import DeadlineFlag, OutboxEvent, Purchase
from tests.support import servers
from tests.support.factories import stored_purchase


@pytest.fixture(scope="module")
def own_database(configured: dict[str, str]) -> Iterator[servers.TestDatabase]:
    database = servers.create_database("fulfil_test_deadlines")
    try:
        servers.migrate(database)
        yield database
    finally:
        servers.drop_database(database)


@pytest.fixture
def deadlines_db(own_database: servers.TestDatabase) -> Iterator[None]:
    """This test's settings point at the database of its own (and back afterwards)."""
    saved = {name: os.environ.get(name) for name in ("DATABASE_URL", "DEADLINE_WARNING_HOURS")}
    os.environ["DATABASE_URL"] = own_database.url
    get_settings.cache_clear()
    try:
        with session_scope() as session:  # a clean slate: no purchase of an earlier test in any window
            session.execute(text("TRUNCATE purchases CASCADE"))
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


def awaiting_transfer(deadline_in: dt.timedelta) -> uuid.UUID:
    deadline = (dt.datetime.now(dt.UTC) + deadline_in).strftime("%Y-%m-%dT%H:%M:%SZ")
    purchase_id = stored_purchase(delivery_deadline=deadline)
    for to_state, changes in ((State.QUOTED, {"quote_id": "qt_1", "quote_expires_at": dt.datetime.now(dt.UTC)}),
                              (State.ORDERING, {}),
                              (State.AWAITING_TRANSFER, {"order_id": f"TBB-{purchase_id.hex[:8]}",
                                                         "order_status": "awaiting_transfer"})):
        with session_scope() as session:
            state_machine.transition(session, session.get_one(Purchase, purchase_id), to_state, reason="test",
                                     next_action_in=600, changes=changes)
    return purchase_id


def warnings_of(purchase_id: uuid.UUID) -> tuple[list[Decimal], list[object]]:
    """The flags stored for a purchase, and the window_hours its deadline_near events carry."""
    with session_scope() as session:
        flags = list(session.scalars(select(DeadlineFlag.window_hours).where(DeadlineFlag.purchase_id == purchase_id)))
        events = session.scalars(select(OutboxEvent.payload).where(OutboxEvent.purchase_id == purchase_id,
                                                                   OutboxEvent.routing_key == "purchase.deadline_near"))
        return flags, [event["deadline_warning"]["window_hours"] for event in events]


@pytest.mark.parametrize("windows", ["settings", "as given"])
def test_a_window_of_0_333_hours_flags_once_and_then_leaves_the_purchase_alone(
    deadlines_db: None, windows: str
) -> None:
    os.environ["DEADLINE_WARNING_HOURS"] = "0.333"
    get_settings.cache_clear()
    hours = get_settings().deadline_warning_hours if windows == "settings" else (0.333,)
    first = awaiting_transfer(dt.timedelta(minutes=10))  # inside 0.33 h (19.8 min) ...
    second = awaiting_transfer(dt.timedelta(minutes=15))  # ... and so is this one, later
    # One purchase per tick: a purchase flagged before must not take the place of the next one.
    ticks = [flag_near_deadlines(hours, batch_size=1) for _ in range(5)]
    assert ticks == [1, 1, 0, 0, 0]
    for purchase_id in (first, second):
        assert warnings_of(purchase_id) == ([Decimal("0.33")], [0.33])  # the window as stored, everywhere


def test_each_window_is_flagged_once_over_many_ticks(deadlines_db: None) -> None:
    purchase_id = awaiting_transfer(dt.timedelta(minutes=10))
    windows = (24, 2, 0.5, 0.333, 0.3349, 0.2)  # 0.333 and 0.3349 are both the 0.33 window
    assert sum(flag_near_deadlines(windows, batch_size=100) for _ in range(6)) == 5
    flags, reported = warnings_of(purchase_id)
    assert sorted(flags) == [Decimal(w) for w in ("0.20", "0.33", "0.50", "2.00", "24.00")]
    assert sorted(reported) == [0.2, 0.33, 0.5, 2.0, 24.0]  # type: ignore[type-var]


@pytest.mark.parametrize("hours", [0.333, 0.335, 0.345, 0.125, 1.005, 2.675, 0.1 + 0.2, 24, 999999.994])
def test_windows_are_rounded_as_postgres_rounds_them_into_the_flags_column(deadlines_db: None, hours: float) -> None:
    with session_scope() as session:
        stored = session.scalar(text("SELECT CAST(CAST(:hours AS float8) AS numeric(8,2))"), {"hours": hours})
    assert window_hours(hours) == stored
