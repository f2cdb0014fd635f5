"""Quorum queues on the local RabbitMQ node (quorum queues work on one node): declaration,
delivery-limit dead-lettering seen by `fulfil dlq`, a queue of the other type refused with one
line, and `fulfil queues migrate` moving it without losing a message; the unrouted-events queue
follows BROKER_QUEUE_TYPE too, and is migrated with its events.

Each test has a vhost of its own, so that the pipeline's queue names (`purchases.*`) can be
used without touching the shared test vhost where the end-to-end workers run.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pika
import pytest

from fulfilment.rabbitmq import dead_letters, outbox
from fulfilment.rabbitmq.broker import FulfilmentBroker, QueueMismatch
from fulfilment.rabbitmq.migrate import QueueInUse, migrate_queues
from fulfilment.rabbitmq.outbox import EventPublisher
from fulfilment.rabbitmq.publisher import intake_message
from fulfilment.rabbitmq.queues import INTAKE_QUEUE, QUEUES, UNROUTED
from fulfilment.requests import parse_request
from tests.support import servers
from tests.support.events import take_messages
from tests.support.servers import REPO

pytestmark = pytest.mark.usefixtures("local_servers")


@pytest.fixture
def own_vhost() -> Iterator[servers.TestVhost]:
    created = servers.create_vhost("fulfil_quorum")
    try:
        yield created
    finally:
        servers.delete_vhost(created)


def queue_types(vhost: servers.TestVhost) -> dict[str, tuple[str, str]]:
    """name -> (type, arguments) as rabbitmqctl reports them."""
    out = servers.rabbitmqctl("list_queues", "-p", vhost.name, "--quiet", "--no-table-headers",
                              "name", "type", "arguments")
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    return {row[0]: (row[1], row[2] if len(row) > 2 else "") for row in rows}


def request(n: int = 1) -> dict[str, object]:
    return {"request_id": f"quorum-{uuid.uuid4().hex[:8]}-{n}", "event_id": "EVT-1", "section_name": "A",
            "quantity": 1, "delivery_type": "mobile_transfer", "delivery_deadline": "2099-01-01T00:00:00Z"}


def fulfil(vhost: servers.TestVhost, *args: str, queue_type: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BROKER_URL": vhost.url, "BROKER_QUEUE_TYPE": queue_type}
    env.pop("DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "fulfilment.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_quorum_broker_declares_actor_delay_and_dead_letter_queues_as_quorum(own_vhost: servers.TestVhost) -> None:
    broker = FulfilmentBroker(url=own_vhost.url, queue_type="quorum", delivery_limit=7,
                              confirm_delivery=True, middleware=[])
    try:
        broker.enqueue(intake_message(parse_request(request())))
    finally:
        broker.close()
    declared = queue_types(own_vhost)
    for name in (INTAKE_QUEUE, f"{INTAKE_QUEUE}.DQ", f"{INTAKE_QUEUE}.XQ"):
        assert declared[name][0] == "quorum", declared
    for name in (INTAKE_QUEUE, f"{INTAKE_QUEUE}.DQ"):
        assert "x-delivery-limit" in declared[name][1] and "7" in declared[name][1], declared[name]
        assert f"{INTAKE_QUEUE}.XQ" in declared[name][1]  # dead-letters into its XQ
    assert "x-message-ttl" in declared[f"{INTAKE_QUEUE}.XQ"][1]


def test_classic_is_the_default_and_declares_as_dramatiq_does(own_vhost: servers.TestVhost) -> None:
    broker = FulfilmentBroker(url=own_vhost.url, confirm_delivery=True, middleware=[])
    try:
        broker.declare_queue("purchases.quote", ensure=True)
    finally:
        broker.close()
    declared = queue_types(own_vhost)
    assert declared["purchases.quote"][0] == "classic"
    assert "x-delivery-limit" not in declared["purchases.quote"][1]


def test_a_message_that_keeps_killing_its_consumer_is_dead_lettered_and_listed_by_dlq(
    own_vhost: servers.TestVhost,
) -> None:
    limit = 2
    broker = FulfilmentBroker(url=own_vhost.url, queue_type="quorum", delivery_limit=limit,
                              confirm_delivery=True, middleware=[])
    try:
        sent = broker.enqueue(intake_message(parse_request(request())))
    finally:
        broker.close()
    # A worker that dies holding the message: its connection goes without an ack, RabbitMQ
    # returns the message and counts the delivery.  The limit + 1st return dead-letters it.
    deliveries = 0
    for _ in range(limit + 3):
        connection = pika.BlockingConnection(pika.URLParameters(own_vhost.url))
        channel = connection.channel()
        method = None
        for _ in range(40):
            method, _properties, _body = channel.basic_get(INTAKE_QUEUE, auto_ack=False)
            if method is not None:
                break
            time.sleep(0.05)
        connection.close()  # no ack: as if killed
        if method is None:
            break
        deliveries += 1
    assert deliveries == limit + 1, f"delivered {deliveries} times with x-delivery-limit={limit}"

    for _ in range(50):
        letters = dead_letters.list_dead_letters(own_vhost.url, queues=(INTAKE_QUEUE,))
        if letters:
            break
        time.sleep(0.1)
    assert [letter.message_id for letter in letters] == [sent.message_id]
    assert letters[0].actor == "submit_purchase"

    listed = fulfil(own_vhost, "dlq", "list", "--json", queue_type="quorum")
    assert listed.returncode == 0, listed.stderr
    assert sent.message_id in listed.stdout


def test_a_queue_of_the_other_type_is_refused_in_one_line_and_migrated_without_loss(
    own_vhost: servers.TestVhost,
) -> None:
    # Today's installation: classic queues holding work (3 requests, one dead letter).
    classic = FulfilmentBroker(url=own_vhost.url, confirm_delivery=True, middleware=[])
    try:
        for queue in QUEUES:
            classic.declare_queue(queue, ensure=True)
        sent = [classic.enqueue(intake_message(parse_request(request(n)))).message_id for n in range(3)]
        channel = classic.channel
        channel.basic_publish("", f"{INTAKE_QUEUE}.XQ", json.dumps({"dead": 1}).encode(),
                              pika.BasicProperties(delivery_mode=2), mandatory=True)
    finally:
        classic.close()

    quorum = FulfilmentBroker(url=own_vhost.url, queue_type="quorum", confirm_delivery=True, middleware=[])
    try:
        with pytest.raises(QueueMismatch, match="fulfil queues migrate") as refused:
            quorum.enqueue(intake_message(parse_request(request())))
        assert "x-queue-type" in str(refused.value)
    finally:
        quorum.close()

    submitted = fulfil(own_vhost, "submit", "--request-id", "quorum-cli-1", "--event-id", "EVT-1",
                       "--section-name", "A", "--quantity", "1",
                       "--delivery-deadline", "2099-01-01T00:00:00Z", queue_type="quorum")
    assert submitted.returncode == 2, submitted.stdout + submitted.stderr
    assert "fulfil queues migrate" in submitted.stderr and "Traceback" not in submitted.stderr

    # A consumer on a queue (a worker still running) is refused.
    busy = pika.BlockingConnection(pika.URLParameters(own_vhost.url))
    try:
        busy.channel().basic_consume(INTAKE_QUEUE, lambda *_: None)
        with pytest.raises(QueueInUse):
            migrate_queues(own_vhost.url, queue_type="quorum", delivery_limit=20)
    finally:
        busy.close()

    dry = fulfil(own_vhost, "queues", "migrate", "--dry-run", queue_type="quorum")
    assert dry.returncode == 0, dry.stderr
    assert queue_types(own_vhost)[INTAKE_QUEUE][0] == "classic"

    moved = fulfil(own_vhost, "queues", "migrate", queue_type="quorum")
    assert moved.returncode == 0, moved.stderr
    assert f"migrated       {INTAKE_QUEUE} (3 message(s))" in moved.stdout
    declared = queue_types(own_vhost)
    for queue in QUEUES:
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            assert declared[name][0] == "quorum", (name, declared)
    assert not any(name.endswith(".migrating") for name in declared)

    # Every message is where it was, bodies intact.
    connection = pika.BlockingConnection(pika.URLParameters(own_vhost.url))
    try:
        channel = connection.channel()
        got = []
        while (frame := channel.basic_get(INTAKE_QUEUE, auto_ack=True))[0] is not None:
            got.append(json.loads(frame[2])["message_id"])
        assert sorted(got) == sorted(sent)
        dead = channel.basic_get(f"{INTAKE_QUEUE}.XQ", auto_ack=True)
        assert dead[2] == json.dumps({"dead": 1}).encode()
    finally:
        connection.close()

    again = fulfil(own_vhost, "queues", "migrate", queue_type="quorum")
    assert again.returncode == 0 and "0 migrated" in again.stdout, again.stdout


def test_the_unrouted_events_queue_follows_the_queue_type_and_is_migrated_with_its_events(
    own_vhost: servers.TestVhost, caplog: pytest.LogCaptureFixture,
) -> None:
    # Events no consumer queue was bound for, kept by a relay of before (a classic queue).
    classic = EventPublisher(own_vhost.url)
    quorum = EventPublisher(own_vhost.url, queue_type="quorum")
    try:
        ids = [str(uuid.uuid4()) for _ in range(4)]
        for event_id in ids[:3]:
            classic.publish(uuid.UUID(event_id), "purchase.received", {"event_id": event_id})
        classic.close()
        assert queue_types(own_vhost)[UNROUTED][0] == "classic"

        # A quorum relay keeps using it (nothing lost) and says, once, how to have it declared as configured.
        with caplog.at_level(logging.WARNING, logger="fulfilment.rabbitmq.outbox"):
            quorum.publish(uuid.UUID(ids[3]), "purchase.received", {"event_id": ids[3]})
        quorum.close()
        [advice] = [r.getMessage() for r in caplog.records if "declared with other arguments" in r.getMessage()]
        assert "fulfil queues migrate" in advice and "x-queue-type" in advice
        assert quorum.unrouted_limit == 0

        dry = fulfil(own_vhost, "queues", "migrate", "--dry-run", queue_type="quorum")
        assert dry.returncode == 0, dry.stderr
        assert f"would migrate  {UNROUTED} (4 message(s))" in dry.stdout
        moved = fulfil(own_vhost, "queues", "migrate", queue_type="quorum")
        assert moved.returncode == 0, moved.stderr
        assert f"migrated       {UNROUTED} (4 message(s))" in moved.stdout
        kind, arguments = queue_types(own_vhost)[UNROUTED]
        assert kind == "quorum" and "x-max-length" in arguments and "drop-head" in arguments, arguments
        assert not any(name.endswith(".migrating") for name in queue_types(own_vhost))

        # Bound to its exchange again, declared as the relay asks: the next unrouted event lands there, no advice.
        caplog.clear()
        later = str(uuid.uuid4())
        with caplog.at_level(logging.WARNING, logger="fulfilment.rabbitmq.outbox"):
            quorum.publish(uuid.UUID(later), "purchase.quoted", {"event_id": later})
        assert not [r for r in caplog.records if "declared with other arguments" in r.getMessage()]
        assert quorum.unrouted_limit == outbox.DEFAULT_UNROUTED_MAX_LENGTH
    finally:
        classic.close()
        quorum.close()
    assert [properties.message_id for properties, _ in take_messages(own_vhost.url, UNROUTED)] == [*ids, later]


def test_a_quorum_relay_declares_the_unrouted_events_queue_as_quorum(own_vhost: servers.TestVhost) -> None:
    relay = EventPublisher(own_vhost.url, queue_type="quorum", unrouted_max_length=5, unrouted_ttl_seconds=60)
    try:
        relay.publish(uuid.uuid4(), "purchase.received", {"event_id": "x"})
    finally:
        relay.close()
    kind, arguments = queue_types(own_vhost)[UNROUTED]
    assert kind == "quorum" and "x-max-length" in arguments and "60000" in arguments, arguments
    assert relay.unrouted_limit == 5
