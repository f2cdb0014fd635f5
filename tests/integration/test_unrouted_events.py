"""`fulfilment.events.unrouted` against a real RabbitMQ: bounded (length and age), quiet in the log
(one line per routing key, a summary, one line back), and a queue declared before the bound keeps
working and says how to bound it -- the printed policy command is applied here and does.

Each test has a vhost of its own (nothing bound to `fulfilment.events` but what it binds).
"""

from __future__ import annotations

import logging
import shlex
import time
import uuid

import pika
import pika.exceptions
import pytest

from fulfilment import metrics
from fulfilment.rabbitmq import outbox
from fulfilment.rabbitmq.outbox import EventPublisher
from fulfilment.rabbitmq.queues import UNROUTED, queue_depths
from fulfilment.scheduler import update_gauges
from fulfilment.settings import PolicySettings, get_settings
from tests.support import servers
from tests.support.events import EventListener, take_messages

LOGGER = "fulfilment.rabbitmq.outbox"


def publish(relay: EventPublisher, routing_key: str, count: int = 1) -> list[str]:
    ids = [uuid.uuid4() for _ in range(count)]
    for event_id in ids:
        relay.publish(event_id, routing_key, {"event_id": str(event_id), "type": routing_key})
    return [str(event_id) for event_id in ids]


def kept(url: str) -> list[str]:
    """The message ids in the unrouted queue, oldest first (taken: the queue is emptied)."""
    return [properties.message_id for properties, _ in take_messages(url, UNROUTED)]


def lines(caplog: pytest.LogCaptureFixture, text: str, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level and text in r.getMessage()]


def test_the_unrouted_queue_keeps_only_the_newest_events_within_its_length(own_vhost: servers.TestVhost) -> None:
    relay = EventPublisher(own_vhost.url, unrouted_max_length=3, unrouted_ttl_seconds=0)
    try:
        ids = publish(relay, "purchase.received", 5)
        assert relay.unrouted_limit == 3
    finally:
        relay.close()
    assert kept(own_vhost.url) == ids[-3:]  # drop-head: the oldest went; publishing never blocked


def test_unrouted_events_expire_after_their_ttl(own_vhost: servers.TestVhost) -> None:
    relay = EventPublisher(own_vhost.url, unrouted_max_length=0, unrouted_ttl_seconds=0.5)
    try:
        publish(relay, "purchase.received", 2)
        assert relay.unrouted_limit == 0  # no length bound configured
        time.sleep(1.0)
    finally:
        relay.close()
    assert kept(own_vhost.url) == []


def test_the_warning_is_once_per_routing_key_with_a_summary_and_one_line_back(
    own_vhost: servers.TestVhost, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay = EventPublisher(own_vhost.url)
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER):
            publish(relay, "purchase.received", 20)
            publish(relay, "purchase.quoted", 5)
            relay.close()  # a reconnect does not make it news again
            publish(relay, "purchase.received", 5)
        assert len(lines(caplog, "no queue is bound to fulfilment.events for purchase.received")) == 1
        assert len(lines(caplog, "no queue is bound to fulfilment.events for purchase.quoted")) == 1
        assert len(lines(caplog, "no queue is bound")) == 2  # 30 events, two keys: two lines

        caplog.clear()
        monkeypatch.setattr(outbox, "UNROUTED_SUMMARY_SECONDS", 0.2)
        relay._summary_due = time.monotonic() + 0.2  # as if the first line had been written with this period
        with caplog.at_level(logging.INFO, logger=LOGGER):
            publish(relay, "purchase.received", 3)
            time.sleep(0.3)
            publish(relay, "purchase.received")
        [summary] = lines(caplog, "still no queue bound")
        assert "for 2 routing key(s)" in summary and "purchase.quoted 4, purchase.received 28" in summary  # after each first line

        caplog.clear()
        listener = EventListener(own_vhost.url, binding="purchase.received")
        with caplog.at_level(logging.INFO, logger=LOGGER):
            publish(relay, "purchase.received", 3)
            assert lines(caplog, "events for purchase.received reach a bound queue again", logging.INFO) == [
                "outbox: events for purchase.received reach a bound queue again (0 more kept in "
                "fulfilment.events.unrouted since the last line)"]
            assert not lines(caplog, "no queue is bound")
            listener.close()  # the consumer goes away: news again, once
            publish(relay, "purchase.received", 3)
        assert len(lines(caplog, "no queue is bound to fulfilment.events for purchase.received")) == 1
    finally:
        relay.close()


def test_a_queue_declared_before_the_bound_is_used_and_the_advice_bounds_it(
    own_vhost: servers.TestVhost, caplog: pytest.LogCaptureFixture
) -> None:
    channel = pika.BlockingConnection(pika.URLParameters(own_vhost.url)).channel()
    channel.queue_declare(UNROUTED, durable=True)  # as releases before the bound declared it
    channel.connection.close()
    relay = EventPublisher(own_vhost.url, unrouted_max_length=2, unrouted_ttl_seconds=3600)
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER):
            ids = publish(relay, "purchase.received", 3)
            relay.close()
            ids += publish(relay, "purchase.received", 1)  # reconnected: not said twice
        assert relay.unrouted_limit == 0
        [advice] = lines(caplog, "was declared with other arguments than this relay's")
        assert '{"x-max-length": 2, "x-overflow": "drop-head", "x-message-ttl": 3600000}' in advice
        assert kept(own_vhost.url) == ids  # used as it is: nothing lost, nothing bounded yet

        # The migration path it prints: a policy, applied as printed (with this vhost), bounds it in place.
        command = advice.split("To bound it without losing its events: ")[1].split(". To have it declared")[0]
        args = shlex.split(command.replace("[-p <vhost>]", f"-p {own_vhost.name}"))
        assert args[:2] == ["rabbitmqctl", "set_policy"]
        servers.rabbitmqctl(*args[1:])
        time.sleep(0.5)  # policies apply asynchronously
        ids = publish(relay, "purchase.received", 4)
        assert kept(own_vhost.url) == ids[-2:]
    finally:
        relay.close()


def test_the_limit_gauge_says_what_the_relay_declared(own_vhost: servers.TestVhost) -> None:
    relay = EventPublisher(own_vhost.url, unrouted_max_length=7)
    settings = get_settings()
    try:
        update_gauges(settings, lambda: queue_depths(own_vhost.url), lambda: relay.unrouted_limit)
        assert metrics.UNROUTED_EVENTS_LIMIT.get() is None  # not declared yet: absent, not a guess
        publish(relay, "purchase.received", 2)
        update_gauges(settings, lambda: queue_depths(own_vhost.url), lambda: relay.unrouted_limit)
        assert metrics.UNROUTED_EVENTS_LIMIT.get() == 7 and metrics.UNROUTED_EVENTS.get() == 2

        def unreachable() -> dict[str, int]:
            raise pika.exceptions.AMQPConnectionError("down")

        update_gauges(settings, unreachable, lambda: relay.unrouted_limit)
        assert metrics.UNROUTED_EVENTS_LIMIT.get() is None  # dropped with the other broker gauges
    finally:
        relay.close()


def test_the_relay_s_defaults_are_the_settings_defaults() -> None:
    fields = PolicySettings.model_fields
    assert fields["events_unrouted_max_length"].default == outbox.DEFAULT_UNROUTED_MAX_LENGTH
    assert fields["events_unrouted_ttl_seconds"].default == outbox.DEFAULT_UNROUTED_TTL_SECONDS
