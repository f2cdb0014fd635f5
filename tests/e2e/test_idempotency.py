"""Idempotency end to end: duplicate submissions and duplicate actor messages."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import func, select

from fulfilment.db import session_scope
from fulfilment.partners.registry import get_partners
from fulfilment.settings import get_settings
from fulfilment.steps import quote as quote_step
from models import Purchase
from tests.support.factories import reload, request, stored_purchase
from tests.support.pipeline import Pipeline, in_states, start_pipeline, wait_until
from tests.support.sandbox import Sandbox


@pytest.fixture(scope="module")
def pipeline(app_env: dict[str, str], log_dir: Path) -> Iterator[Pipeline]:
    running = start_pipeline(app_env, log_dir, name="idempotency")
    yield running
    running.stop()


@pytest.fixture
def raw_broker(app_env: dict[str, str]) -> Iterator[RabbitmqBroker]:
    broker = RabbitmqBroker(url=app_env["BROKER_URL"], confirm_delivery=True, middleware=[])
    yield broker
    broker.close()


def message(actor: str, queue: str, purchase_id: uuid.UUID) -> dramatiq.Message:  # type: ignore[type-arg]
    return dramatiq.Message(queue_name=queue, actor_name=actor, args=(str(purchase_id),), kwargs={}, options={},
                            message_id=str(uuid.uuid4()), message_timestamp=int(time.time() * 1000))


def calls(sandbox: Sandbox) -> dict[str, int]:
    return sandbox.stats()["requests"]


def delta(before: dict[str, int], after: dict[str, int], endpoint: str) -> int:
    return after.get(endpoint, 0) - before.get(endpoint, 0)


def test_the_same_request_id_submitted_twice_makes_one_purchase(pipeline: Pipeline, clean_sandbox: Sandbox) -> None:
    body = request()
    first = pipeline.submit(body)
    second = pipeline.submit(dict(body))
    assert first == second
    wait_until([first], in_states("awaiting_transfer", "transfer_complete"), pipeline=pipeline)
    time.sleep(1)  # give the second intake message time to be processed too
    with session_scope() as session:
        assert session.scalar(select(func.count()).where(Purchase.request_id == body["request_id"])) == 1
    assert len(clean_sandbox.orders(quote_id=reload(first).quote_id)) == 1


def test_a_quote_message_delivered_twice_calls_the_partner_once(
    pipeline: Pipeline, clean_sandbox: Sandbox, raw_broker: RabbitmqBroker
) -> None:
    purchase_id = stored_purchase()  # RECEIVED, no message sent yet
    before = calls(clean_sandbox)
    duplicate = message("quote_purchase", "purchases.quote", purchase_id)
    raw_broker.enqueue(duplicate)
    raw_broker.enqueue(duplicate)  # same message id, delivered twice
    wait_until([purchase_id], in_states("awaiting_transfer", "transfer_complete"), pipeline=pipeline)
    after = calls(clean_sandbox)
    assert delta(before, after, "create_quote") == 1
    assert delta(before, after, "create_order") == 1


def test_an_order_message_delivered_twice_calls_the_partner_once(
    pipeline: Pipeline, clean_sandbox: Sandbox, raw_broker: RabbitmqBroker
) -> None:
    purchase_id = stored_purchase()
    # Quote in this process, without nudging the order step: the purchase waits in QUOTED.
    quote_step.quote(purchase_id, partner=get_partners(), settings=get_settings())
    assert reload(purchase_id).state == "quoted"
    before = calls(clean_sandbox)
    for _ in range(3):
        raw_broker.enqueue(message("place_order", "purchases.order", purchase_id))
    purchase = wait_until([purchase_id], in_states("awaiting_transfer", "transfer_complete"), pipeline=pipeline)
    time.sleep(1)
    after = calls(clean_sandbox)
    assert delta(before, after, "create_order") == 1
    assert len(clean_sandbox.orders(quote_id=purchase[purchase_id].quote_id)) == 1


def test_stale_messages_for_finished_purchases_do_nothing(
    pipeline: Pipeline, clean_sandbox: Sandbox, raw_broker: RabbitmqBroker
) -> None:
    purchase_id = pipeline.submit(request())
    wait_until([purchase_id], in_states("transfer_complete"), pipeline=pipeline)
    before = calls(clean_sandbox)
    for actor, queue in (("quote_purchase", "purchases.quote"), ("place_order", "purchases.order"),
                         ("resolve_order", "purchases.order"), ("check_transfer", "purchases.transfer")):
        raw_broker.enqueue(message(actor, queue, purchase_id))
    time.sleep(2)
    after = calls(clean_sandbox)
    for endpoint in ("create_quote", "create_order", "get_order", "list_orders"):
        assert delta(before, after, endpoint) == 0, endpoint
    assert reload(purchase_id).state == "transfer_complete"
