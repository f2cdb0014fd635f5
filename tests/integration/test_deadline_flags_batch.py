"""Deadline flags raised a batch at a time (fulfilment/deadlines.py, issue 8) write exactly what
`state_machine.flag_deadline` writes for one flag: the same history row and the same event, apart
from ids and timestamps, and the events validate against the published schema.

A database of its own: `flag_near_deadlines` flags every due purchase in the database.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import jsonschema
import pytest
from sqlalchemy import select, text

from fulfilment import metrics, state_machine
from fulfilment.db import session_scope
from fulfilment.deadlines import DUE_FLAGS_SQL, EVENT_TYPE, flag_near_deadlines, raise_flags, window_hours
from fulfilment.settings import get_settings
from fulfilment.state_machine import State
from models import DeadlineFlag, OutboxEvent, Purchase, PurchaseTransition
from tests.support import servers
from tests.support.factories import stored_purchase
from tests.support.servers import REPO

SCHEMA = json.loads((REPO / "docs" / "schemas" / "purchase-event.schema.json").read_text())
WINDOWS = (24, 2, 0.333)


@pytest.fixture(scope="module")
def own_database(configured: dict[str, str]) -> Iterator[servers.TestDatabase]:
    with servers.migrated_database("fulfil_test_flags") as database:
        yield database


@pytest.fixture
def flags_db(own_database: servers.TestDatabase) -> Iterator[None]:
    saved = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = own_database.url
    get_settings.cache_clear()
    try:
        with session_scope() as session:  # no purchase of an earlier test in any window
            session.execute(text("TRUNCATE purchases CASCADE"))
        yield
    finally:
        if saved is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = saved
        get_settings.cache_clear()


SHAPES: dict[str, tuple[dict[str, Any] | None, dict[str, Any]]] = {
    "full": ({"basket": "b-1", "tags": ["x", 1, None]},
             {"order_status": "awaiting_transfer", "transfer_email": "t@ticketbuyback.com", "seat_range": "1-2",
              "unit_price": Decimal("175.50")}),
    "bare": (None, {"order_status": None}),
}


def awaiting_transfer(deadline: str, metadata: dict[str, Any] | None, order: dict[str, Any]) -> uuid.UUID:
    purchase_id = stored_purchase(delivery_deadline=deadline, metadata=metadata)
    for to_state, changes in ((State.QUOTED, {"quote_id": "qt_1", "quote_expires_at": dt.datetime.now(dt.UTC)}),
                              (State.ORDERING, {}),
                              (State.AWAITING_TRANSFER, {"order_id": f"TBB-{purchase_id.hex[:12]}", **order})):
        with session_scope() as session:
            state_machine.transition(session, session.get_one(Purchase, purchase_id), to_state, reason="test",
                                     next_action_in=600, changes=changes)
    return purchase_id


def written(purchase_id: uuid.UUID) -> list[tuple[PurchaseTransition, OutboxEvent]]:
    """A purchase's deadline_flag history rows, each with its event, by window."""
    with session_scope() as session:
        pairs = session.execute(
            select(PurchaseTransition, OutboxEvent)
            .join(OutboxEvent, OutboxEvent.transition_id == PurchaseTransition.id)
            .where(PurchaseTransition.purchase_id == purchase_id, PurchaseTransition.kind == "deadline_flag")
        ).all()
    return sorted(((entry, event) for entry, event in pairs), key=lambda pair: pair[1].payload["deadline_warning"]["window_hours"])


def comparable(pair: tuple[PurchaseTransition, OutboxEvent], order_id: str | None) -> dict[str, Any]:
    """What must be equal between the two paths: everything but ids and timestamps."""
    entry, event = pair
    payload = dict(event.payload)
    for key in ("event_id", "occurred_at", "purchase_id", "request_id"):
        payload.pop(key)
    if "order" in payload:
        assert payload["order"]["order_id"] == order_id
        payload["order"] = {**payload["order"], "order_id": "-"}
    return {
        "history": (entry.kind, entry.from_state, entry.to_state, entry.reason, entry.attempt, entry.message_id),
        "event": (event.routing_key, event.published_at, payload),
    }


def events_counted() -> float:
    return float(metrics.TRANSITIONS.labels(EVENT_TYPE)._value.get())


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_batch_writes_what_flag_deadline_writes_and_the_events_validate(flags_db: None, shape: str) -> None:
    metadata, order = SHAPES[shape]
    deadline = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    one_by_one = awaiting_transfer(deadline, metadata, order)
    batched = awaiting_transfer(deadline, metadata, order)
    with session_scope() as session:  # the per-purchase path, as the scheduler raised flags before
        purchase = session.get_one(Purchase, one_by_one)
        assert all(state_machine.flag_deadline(session, purchase, float(window_hours(w))) for w in WINDOWS)

    counted = events_counted()
    assert flag_near_deadlines(WINDOWS, batch_size=100) == 3  # only the other purchase's three windows
    assert flag_near_deadlines(WINDOWS, batch_size=100) == 0
    assert events_counted() == counted + 3

    expected, found = written(one_by_one), written(batched)
    assert len(expected) == len(found) == 3
    with session_scope() as session:
        purchases = {p.id: (p.order_id, p.request_id) for p in session.scalars(select(Purchase).where(
            Purchase.id.in_([one_by_one, batched])))}
    order_ids = {purchase_id: order_id for purchase_id, (order_id, _) in purchases.items()}
    assert ([comparable(pair, order_ids[one_by_one]) for pair in expected]
            == [comparable(pair, order_ids[batched]) for pair in found])

    checker = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    for entry, event in found:
        checker.validate(event.payload)
        assert event.purchase_id == batched and event.routing_key == event.payload["type"] == EVENT_TYPE
        assert event.payload["event_id"] == str(event.id)
        assert event.payload["purchase_id"] == str(batched)
        assert event.payload["request_id"] == purchases[batched][1]
        assert event.payload["occurred_at"] == state_machine.utc_text(entry.created_at)
        assert event.created_at == entry.created_at
    assert [e.payload["deadline_warning"]["window_hours"] for _, e in found] == [0.33, 2.0, 24.0]
    with session_scope() as session:
        flags = sorted(session.scalars(select(DeadlineFlag.window_hours).where(DeadlineFlag.purchase_id == batched)))
    assert flags == [Decimal("0.33"), Decimal("2.00"), Decimal("24.00")]


def test_a_pair_flagged_meanwhile_is_skipped_with_no_history_or_event(flags_db: None) -> None:
    deadline = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    purchase_id = awaiting_transfer(deadline, None, {})
    windows = sorted(window_hours(w) for w in WINDOWS)
    with session_scope() as session:
        rows = session.execute(DUE_FLAGS_SQL, {"windows": windows, "widest": max(windows), "batch": 100}).all()
        assert len(rows) == 3
        # As if another scheduler had flagged the 2 h window between the SELECT and the INSERT.
        session.add(DeadlineFlag(purchase_id=purchase_id, window_hours=Decimal("2.00")))
        session.flush()
        assert raise_flags(session, rows) == 2
    found = written(purchase_id)
    assert [e.payload["deadline_warning"]["window_hours"] for _, e in found] == [0.33, 24.0]


def test_an_empty_batch_writes_nothing(flags_db: None) -> None:
    with session_scope() as session:
        assert raise_flags(session, []) == 0
    assert flag_near_deadlines(WINDOWS, batch_size=100) == 0
    assert flag_near_deadlines((), batch_size=100) == 0
