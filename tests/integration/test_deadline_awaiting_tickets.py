"""Deadline warnings cover Ticketmaster purchases awaiting their tickets, as they cover TBB purchases
awaiting a transfer: a purchase whose order exists but whose tickets the buyer does not have yet
(not fetched, or held back until their delivery delay date) is flagged once per window.

Real Postgres, a database of its own (the scheduler's job flags every due purchase in it), migrated
with the shipped migrations: the scan's partial index covers both states.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal

import jsonschema
import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from fulfilment import state_machine
from fulfilment.cli import app
from fulfilment.db import session_scope
from fulfilment.deadlines import DUE_FLAGS_SQL, flag_near_deadlines
from fulfilment.settings import get_settings
from fulfilment.state_machine import State
from models import DeadlineFlag, OutboxEvent, Purchase
from tests.support import servers
from tests.support.factories import stored_purchase, tm_awaiting_tickets
from tests.support.servers import REPO

SCHEMA = json.loads((REPO / "docs" / "schemas" / "purchase-event.schema.json").read_text())


@pytest.fixture(scope="module")
def own_database(configured: dict[str, str]) -> Iterator[servers.TestDatabase]:
    with servers.migrated_database("fulfil_test_deadline_tickets") as database:
        yield database


@pytest.fixture
def tickets_db(own_database: servers.TestDatabase, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("DATABASE_URL", own_database.url)
    get_settings.cache_clear()
    try:
        with session_scope() as session:
            session.execute(text("TRUNCATE purchases CASCADE"))
        yield own_database.url
    finally:
        get_settings.cache_clear()


def due_in(minutes: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def awaiting_transfer(deadline: str) -> uuid.UUID:
    purchase_id = stored_purchase(delivery_deadline=deadline)
    for to_state, changes in ((State.QUOTED, {"quote_id": "qt_1", "quote_expires_at": dt.datetime.now(dt.UTC)}),
                              (State.ORDERING, {}),
                              (State.AWAITING_TRANSFER, {"order_id": f"TBB-{purchase_id.hex[:8]}"})):
        with session_scope() as session:
            state_machine.transition(session, session.get_one(Purchase, purchase_id), to_state, reason="test",
                                     next_action_in=600, changes=changes)
    return purchase_id


def issued(deadline: str) -> uuid.UUID:
    """A TM purchase whose tickets were delivered: nothing to warn about."""
    purchase_id = tm_awaiting_tickets(delivery_deadline=deadline)
    with session_scope() as session:
        state_machine.transition(session, session.get_one(Purchase, purchase_id), State.TICKETS_ISSUED,
                                 reason="test", changes={"order_status": "tickets_issued"})
    return purchase_id


def flags_of(purchase_id: uuid.UUID) -> list[Decimal]:
    with session_scope() as session:
        return sorted(session.scalars(select(DeadlineFlag.window_hours).where(DeadlineFlag.purchase_id == purchase_id)))


def test_purchases_awaiting_tickets_are_flagged_once_per_window(tickets_db: str) -> None:
    waiting = tm_awaiting_tickets(delivery_deadline=due_in(90))  # within 2 h and 24 h
    far = tm_awaiting_tickets(delivery_deadline=due_in(20 * 60))  # within 24 h only
    transfer = awaiting_transfer(due_in(90))
    delivered = issued(due_in(90))
    not_ordered = stored_purchase(delivery_deadline=due_in(90))  # received: nothing ordered yet

    assert [flag_near_deadlines((24, 2), batch_size=100) for _ in range(3)] == [5, 0, 0]
    assert flags_of(waiting) == [Decimal("2.00"), Decimal("24.00")]
    assert flags_of(far) == [Decimal("24.00")]
    assert flags_of(transfer) == [Decimal("2.00"), Decimal("24.00")]
    assert flags_of(delivered) == [] and flags_of(not_ordered) == []

    with session_scope() as session:
        events = session.scalars(select(OutboxEvent.payload).where(OutboxEvent.purchase_id == waiting,
                                                                   OutboxEvent.routing_key == "purchase.deadline_near"))
        payloads = sorted(events, key=lambda p: p["deadline_warning"]["window_hours"])
    assert [p["deadline_warning"]["window_hours"] for p in payloads] == [2.0, 24.0]
    for payload in payloads:
        jsonschema.validate(payload, SCHEMA)
        assert payload["state"] == "awaiting_tickets" and payload["order"]["order_id"] == f"35-{waiting.hex[:5]}/LA1"


def test_the_scan_uses_the_partial_index_for_both_states(tickets_db: str) -> None:
    for minutes in (30, 60, 90):
        tm_awaiting_tickets(delivery_deadline=due_in(minutes))
        awaiting_transfer(due_in(minutes))
    with session_scope() as session:
        session.execute(text("ANALYZE purchases"))
        session.execute(text("SET LOCAL enable_seqscan = off"))  # a tiny table: ask whether the index *can* serve
        plan = "\n".join(row[0] for row in session.execute(
            text("EXPLAIN " + str(DUE_FLAGS_SQL.text)), {"windows": [Decimal("2.00")], "widest": Decimal("2.00"),
                                                         "batch": 10}))
    # An index on the deadline serves it (the partial one, or the console's plain deadline index, which a
    # tiny table may prefer), never a scan of every purchase.
    assert "Seq Scan on purchases" not in plan, plan
    assert any(f"{how} ix_purchases_{name}" in plan for how in ("using", "on")
               for name in ("awaiting_deadline", "delivery_deadline")), plan


def test_fulfil_list_flagged_shows_purchases_awaiting_tickets(tickets_db: str) -> None:
    waiting = tm_awaiting_tickets(delivery_deadline=due_in(90))
    transfer = awaiting_transfer(due_in(90))
    assert flag_near_deadlines((2,), batch_size=100) == 2
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["list", "--flagged", "--json"], env={"DATABASE_URL": tickets_db})
    assert result.exit_code == 0, result.output
    listed = {p["purchase_id"]: p for p in json.loads(result.stdout)["purchases"]}
    assert set(listed) == {str(waiting), str(transfer)}
    assert listed[str(waiting)]["state"] == "awaiting_tickets"
    assert listed[str(waiting)]["deadline_windows_hours"] == [2.0]
