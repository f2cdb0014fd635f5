"""The scheduler's gauges against real Postgres and RabbitMQ (fulfilment.scheduler.update_gauges)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pika
import pika.exceptions
import pytest
from sqlalchemy import text

from fulfilment import metrics
from fulfilment.db import session_scope
from fulfilment.rabbitmq.outbox import UNROUTED
from fulfilment.rabbitmq.queues import DEAD_LETTER_QUEUES, GAUGED_QUEUES, QUEUES, queue_depths
from fulfilment.scheduler import update_gauges
from fulfilment.settings import get_settings
from tests.support.factories import stored_purchase


@pytest.fixture(autouse=True)
def leading() -> Iterator[None]:
    metrics.set_scheduler_leader(True)
    yield
    metrics.set_scheduler_leader(False)


def gauge(g: metrics.SchedulerGauge, *labels: str) -> float:
    value = g.get(*labels)
    assert value is not None, f"{g.name}{labels} not set"
    return value


def test_stalled_counts_stalled_purchases_only_and_the_outbox_backlog_is_reported() -> None:
    settings = get_settings()
    update_gauges(settings)
    before = {"stalled": gauge(metrics.STALLED), "attention": gauge(metrics.PURCHASES_BY_STATE, "needs_attention"),
              "backlog": gauge(metrics.OUTBOX_BACKLOG)}

    ids = [stored_purchase() for _ in range(3)]  # each records a purchase.received event, unpublished
    with session_scope() as session:
        session.execute(text("UPDATE purchases SET state = 'stalled', next_action_at = NULL WHERE id = ANY(:ids)"),
                        {"ids": ids[:2]})
        session.execute(text("UPDATE purchases SET state = 'needs_attention', next_action_at = NULL WHERE id = :id"),
                        {"id": ids[2]})
        # The oldest unpublished event is an hour old.
        session.execute(text("UPDATE outbox_events SET created_at = now() - interval '1 hour' WHERE purchase_id = :id"),
                        {"id": ids[0]})
    try:
        update_gauges(settings)
        assert gauge(metrics.STALLED) == before["stalled"] + 2  # needs_attention is not "stalled"
        assert gauge(metrics.PURCHASES_BY_STATE, "stalled") == gauge(metrics.STALLED)
        assert gauge(metrics.PURCHASES_BY_STATE, "needs_attention") == before["attention"] + 1
        assert gauge(metrics.OUTBOX_BACKLOG) == before["backlog"] + 3
        assert 3600 <= gauge(metrics.OUTBOX_OLDEST_AGE) < 3600 + 60
    finally:
        with session_scope() as session:  # leave nothing for other tests' relays and counts
            session.execute(text("UPDATE outbox_events SET published_at = now() WHERE purchase_id = ANY(:ids)"),
                            {"ids": ids})
            session.execute(text("UPDATE purchases SET state = 'failed' WHERE id = ANY(:ids)"), {"ids": ids})

    update_gauges(settings)
    assert gauge(metrics.STALLED) == before["stalled"]
    assert gauge(metrics.OUTBOX_BACKLOG) == before["backlog"]


def test_queue_gauges_come_from_rabbitmq_and_go_absent_when_it_is_out_of_reach(
    configured: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    settings = get_settings()
    url = configured["BROKER_URL"]
    real = queue_depths(url)
    assert set(real) == set(GAUGED_QUEUES)

    depths = {**real, QUEUES[1]: 5, DEAD_LETTER_QUEUES[2]: 2, UNROUTED: 3}
    update_gauges(settings, lambda: depths)
    assert gauge(metrics.QUEUE_MESSAGES, QUEUES[1]) == 5
    assert gauge(metrics.DEAD_LETTERS, DEAD_LETTER_QUEUES[2]) == 2
    assert gauge(metrics.UNROUTED_EVENTS) == 3
    assert metrics.DEAD_LETTERS.get(QUEUES[1]) is None  # main queues are not dead letters, and vice versa
    assert metrics.QUEUE_MESSAGES.get(DEAD_LETTER_QUEUES[2]) is None

    def unreachable() -> dict[str, int]:
        raise pika.exceptions.AMQPConnectionError("connection refused")

    from fulfilment.outages import BROKER

    BROKER.recovered()  # no outage left over from another test
    with caplog.at_level(logging.WARNING, logger="fulfilment.outage"):
        update_gauges(settings, unreachable)
        update_gauges(settings, unreachable)  # still down: counted, not logged again
    for g in metrics.BROKER_GAUGES:
        assert list(g.family().samples) == [], f"{g.name} is stale"
    assert metrics.STALLED.get() is not None  # the database's gauges are still there
    assert caplog.text.count("cannot read queue depths") == 1, caplog.text
    assert "broker (RabbitMQ) down: scheduler gauges" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fulfilment.outage"):
        update_gauges(settings, lambda: depths)
    assert "broker (RabbitMQ) back after" in caplog.text and "(2 failed attempts, " in caplog.text


def test_queue_depths_counts_ready_messages_over_one_connection(configured: dict[str, str]) -> None:
    url = configured["BROKER_URL"]
    queue = f"test-depth-{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.queue_declare(queue, auto_delete=False)
        channel.confirm_delivery()
        for _ in range(3):
            channel.basic_publish("", queue, b"{}")
        assert queue_depths(url, (queue, "no-such-queue")) == {queue: 3, "no-such-queue": 0}
    finally:
        connection.channel().queue_delete(queue)
        connection.close()


def test_a_scheduler_that_steps_down_exports_no_purchase_or_queue_gauges() -> None:
    update_gauges(get_settings(), lambda: dict.fromkeys(GAUGED_QUEUES, 0))
    assert metrics.STALLED.get() is not None and metrics.QUEUE_MESSAGES.get(QUEUES[0]) == 0
    metrics.set_scheduler_leader(False)
    assert metrics.SCHEDULER_LEADER.get() == 0
    for g in metrics.SCHEDULER_GAUGES.gauges:
        if g is not metrics.SCHEDULER_LEADER:
            assert list(g.family().samples) == [], g.name


def test_replication_gauges_say_the_local_database_is_a_primary_without_a_synchronous_standby() -> None:
    """The test Postgres is a lone primary: no standby confirms its commits (FulfilNoSynchronousStandby
    would page if the policy required one).  tests/ha reads the same on the Patroni pair."""
    update_gauges(get_settings())
    assert gauge(metrics.POSTGRES_PRIMARY) == 1
    assert gauge(metrics.SYNCHRONOUS_STANDBYS) == 0
    assert gauge(metrics.SYNC_STANDBY_REQUIRED) == (1 if get_settings().sync_standby_policy == "require" else 0)
    assert list(metrics.REPLICATION_LAG.family().samples) == []  # no standby, no lag reported
