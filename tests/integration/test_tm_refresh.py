"""SafeTix refreshes (steps/refresh.py) on real Postgres and the TM sandbox over HTTP: once per
ticket at event start - 20 h even with two schedulers and duplicate messages, none after the event,
on demand, `x-user-id` always the buyer's."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import update

from fulfilment import ticket_crypto
from fulfilment.db import session_scope
from fulfilment.flowkit.flow import Partners
from fulfilment.settings import get_settings
from fulfilment.state_machine import State
from fulfilment.steps.refresh import refresh_tickets, schedule_refreshes
from models import Ticket
from tests.support.factories import tm_request
from tests.support.tm_pipeline import Driver, finished, tickets, valid_events
from tests.support.tm_sandbox import TMSandboxProcess


@pytest.fixture
def issued(tm: TMSandboxProcess, partners: Partners) -> tuple[uuid.UUID, dict[str, Any]]:
    driver = Driver(partners)
    raw = tm_request(quantity=2)
    purchase_id = driver.take_in(raw)
    assert driver.until(purchase_id, finished).state == State.TICKETS_ISSUED
    return purchase_id, raw


def make_due(purchase_id: uuid.UUID, *, event_in: dt.timedelta = dt.timedelta(hours=19)) -> None:
    """As if the clock had reached start - 20 h: the event starts `event_in` from now."""
    now = dt.datetime.now(dt.UTC)
    with session_scope() as session:
        session.execute(update(Ticket).where(Ticket.purchase_id == purchase_id).values(
            event_start=now + event_in, refresh_due_at=now + event_in - dt.timedelta(hours=20)))


def refreshed_events(purchase_id: uuid.UUID) -> list[dict[str, Any]]:
    return [e for e in valid_events(purchase_id) if e["type"] == "purchase.tickets_refreshed"]


def calls_per_barcode(tm: TMSandboxProcess) -> dict[str, int]:
    return {barcode: len(calls) for barcode, calls in tm.admin.counts()["securerender_calls"].items()}


def test_each_ticket_is_refreshed_once_with_two_schedulers_and_duplicate_messages(
        tm: TMSandboxProcess, partners: Partners, issued: tuple[uuid.UUID, dict[str, Any]]) -> None:
    purchase_id, raw = issued
    before = {t.id: t.token_encrypted for t in tickets(purchase_id)}
    make_due(purchase_id)
    settings = get_settings()
    sent: list[uuid.UUID] = []
    lock = threading.Lock()

    def scheduler() -> None:  # a tick of one of two schedulers
        def send(pid: uuid.UUID) -> None:
            with lock:
                sent.append(pid)
        schedule_refreshes(settings, send)

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sent == [purchase_id]  # one of the two sent it; the other found it marked
    # The message delivered three times at once (a duplicate, a redelivery), then once more.
    results: list[int] = []
    workers = [threading.Thread(target=lambda: results.append(refresh_tickets(
        purchase_id, partners=partners, settings=settings, on_demand=False))) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.append(refresh_tickets(purchase_id, partners=partners, settings=settings, on_demand=False))
    assert sorted(results) == [0, 0, 0, 2]

    stored = tickets(purchase_id)
    assert calls_per_barcode(tm) == {t.barcode: 1 for t in stored}
    assert all(t.refreshed_at is not None and t.token_encrypted != before[t.id] for t in stored)
    [event] = refreshed_events(purchase_id)
    assert event["refresh"] == {"trigger": "scheduled"}
    key = settings.ticket_key
    assert key is not None
    tokens = {t.barcode: ticket_crypto.decrypt(key, t.token_encrypted).get_secret_value()  # type: ignore[arg-type]
              for t in stored}
    assert {t["barcode"]: t["token"] for t in event["tickets"]} == tokens
    assert all(t["error"] is None for t in event["tickets"])  # x-user-id was the buyer's: TM accepted it
    # Another tick later: nothing more to do.
    assert schedule_refreshes(settings, lambda pid: sent.append(pid)) == 0


def test_no_refresh_before_it_is_due_nor_after_the_event(
        tm: TMSandboxProcess, partners: Partners, issued: tuple[uuid.UUID, dict[str, Any]]) -> None:
    purchase_id, _ = issued
    settings = get_settings()
    sent: list[uuid.UUID] = []
    make_due(purchase_id, event_in=dt.timedelta(hours=21))  # due in an hour
    assert schedule_refreshes(settings, sent.append) == 0
    assert refresh_tickets(purchase_id, partners=partners, settings=settings, on_demand=False) == 0
    make_due(purchase_id, event_in=-dt.timedelta(minutes=1))  # the event has started
    assert schedule_refreshes(settings, sent.append) == 0
    assert refresh_tickets(purchase_id, partners=partners, settings=settings, on_demand=False) == 0
    assert sent == [] and calls_per_barcode(tm) == {}


def test_an_on_demand_refresh_refreshes_every_ticket_and_keeps_the_scheduled_one(
        tm: TMSandboxProcess, partners: Partners, issued: tuple[uuid.UUID, dict[str, Any]]) -> None:
    purchase_id, _ = issued
    settings = get_settings()
    assert refresh_tickets(purchase_id, partners=partners, settings=settings, on_demand=True) == 2
    assert all(t.refreshed_at is None for t in tickets(purchase_id))  # the scheduled refresh still comes
    [event] = refreshed_events(purchase_id)
    assert event["refresh"] == {"trigger": "on_demand"} and all(t["token"] for t in event["tickets"])


def test_a_refresh_for_another_buyer_is_refused_per_ticket(
        tm: TMSandboxProcess, partners: Partners, issued: tuple[uuid.UUID, dict[str, Any]]) -> None:
    purchase_id, _ = issued
    with session_scope() as session:  # as if the stored buyer id were not the one TM bound the tickets to
        from models import Purchase

        purchase = session.get_one(Purchase, purchase_id)
        purchase.partner_data = {**(purchase.partner_data or {}), "third_party_account_id": "someone-else"}
    before = {t.id: t.token_encrypted for t in tickets(purchase_id)}
    assert refresh_tickets(purchase_id, partners=partners, settings=get_settings(), on_demand=True) == 0
    [event] = refreshed_events(purchase_id)
    assert all(t["token"] is None and t["error"] for t in event["tickets"])
    assert {t.id: t.token_encrypted for t in tickets(purchase_id)} == before
