"""Driving Ticketmaster purchases in a test process: what a worker runs for each message and what
the scheduler re-drives (the real steps/runner.py and scheduler.redrive_due), and reading back what
Postgres holds.  Integration tests use it; the worker processes are tests/e2e's."""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from fulfilment.db import session_scope
from fulfilment.flowkit.fencing import Next
from fulfilment.flowkit.flow import Partners
from fulfilment.partners.ticketmaster import flow as tm_flow
from fulfilment.scheduler import redrive_due
from fulfilment.settings import Settings, get_settings
from fulfilment.state_machine import HELD_FOR_OPERATOR, TERMINAL, State
from fulfilment.steps import runner
from models import OutboxEvent, Purchase, PurchaseTransition, Ticket
from tests.support.factories import reload
from tests.support.tm_sandbox import TMSandboxProcess

FINISHED = TERMINAL | HELD_FOR_OPERATOR


class Driver:
    """Runs what a worker would run for each message, and what the scheduler would re-drive."""

    def __init__(self, partners: Partners, settings: Settings | None = None) -> None:
        self.partners = partners
        self.settings = settings or get_settings()
        self.queue: deque[tuple[Next, uuid.UUID]] = deque()
        self.steps: list[str] = []
        self.mine: set[uuid.UUID] = set()  # live purchases of earlier tests are not this driver's

    def send(self, following: Next, purchase_id: uuid.UUID) -> None:
        if purchase_id in self.mine:
            self.queue.append((following, purchase_id))

    def take_in(self, raw: dict[str, Any]) -> uuid.UUID:
        from fulfilment.requests import purchase_id_for

        self.mine.add(purchase_id_for(raw["request_id"]))
        purchase_id = runner.take_in(raw, partner=self.partners, settings=self.settings, message_id="intake",
                                     send=self.send)
        assert purchase_id is not None
        return purchase_id

    def run_queue(self) -> None:
        while self.queue:
            following, purchase_id = self.queue.popleft()
            self.steps.append(str(following.step))
            try:
                runner.run_step(following.step, purchase_id, partner=self.partners, settings=self.settings,
                                message_id=f"msg-{len(self.steps)}", send=self.send)
            except runner.RetryLater:
                pass  # the lease was given back: the scheduler's re-drive (below) retries it

    def until(self, purchase_id: uuid.UUID, done: Callable[[Purchase], bool], *, timeout: float = 40) -> Purchase:
        deadline = time.monotonic() + timeout
        while True:
            self.run_queue()
            purchase = reload(purchase_id)
            if done(purchase):
                return purchase
            if time.monotonic() > deadline:
                raise AssertionError(f"purchase {purchase_id} is still {purchase.state}: {purchase.last_error}")
            time.sleep(0.1)
            redrive_due(self.settings, lambda step, pid: self.send(Next(step), pid))


def finished(purchase: Purchase) -> bool:
    return State(purchase.state) in FINISHED


def events(purchase_id: uuid.UUID) -> list[dict[str, Any]]:
    with session_scope() as session:
        return [event.payload for event in session.scalars(
            select(OutboxEvent).where(OutboxEvent.purchase_id == purchase_id).order_by(OutboxEvent.created_at))]


def history(purchase_id: uuid.UUID) -> list[PurchaseTransition]:
    with session_scope() as session:
        return list(session.scalars(select(PurchaseTransition).where(PurchaseTransition.purchase_id == purchase_id)
                                    .order_by(PurchaseTransition.id)))


def tickets(purchase_id: uuid.UUID) -> list[Ticket]:
    with session_scope() as session:
        return list(session.scalars(select(Ticket).where(Ticket.purchase_id == purchase_id)
                                    .order_by(Ticket.position)))


def orders_of(tm: TMSandboxProcess, purchase_id: uuid.UUID) -> list[dict[str, Any]]:
    wanted = tm_flow.source_account_id(purchase_id)
    return [order for order in tm.admin.orders() if order["source_account_id"] == wanted]


def held_carts(tm: TMSandboxProcess) -> list[dict[str, Any]]:
    return [cart for cart in tm.admin.carts() if cart["state"] in ("reserved", "paid", "held")]




def valid_events(purchase_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every event of the purchase as the relay publishes it (sealed tokens opened), each checked
    against docs/schemas/purchase-event.schema.json."""
    import json

    import jsonschema

    from tests.support.servers import REPO

    schema = json.loads((REPO / "docs" / "schemas" / "purchase-event.schema.json").read_text())
    checker = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    from fulfilment import ticket_crypto

    key = get_settings().ticket_key
    found = [ticket_crypto.open_event(key, event) for event in events(purchase_id)]
    for event in found:
        checker.validate(event)
    return found
