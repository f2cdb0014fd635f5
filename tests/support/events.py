"""A consumer bound to `fulfilment.events`, as a requesting service would bind one."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions

from fulfilment.rabbitmq.outbox import EXCHANGE


class EventListener:
    """durable=True: a durable queue that outlives broker restarts (reconnects on demand);
    quorum=True (with durable): a quorum queue, replicated on a RabbitMQ cluster, that outlives a
    node's loss.  The URL may name several nodes (';')."""

    def __init__(self, broker_url: str, binding: str = "purchase.#", *, durable: bool = False,
                 quorum: bool = False) -> None:
        self.broker_url = broker_url
        self.binding = binding
        self.durable = durable
        self.arguments = {"x-queue-type": "quorum"} if quorum else None
        self.queue = f"test-events-{uuid.uuid4().hex[:8]}"
        self.received: list[dict[str, Any]] = []
        self._connect()

    def _connect(self) -> None:
        from fulfilment.rabbitmq.broker import node_parameters

        self.connection = pika.BlockingConnection(node_parameters(self.broker_url))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
        self.channel.queue_declare(self.queue, durable=self.durable, exclusive=not self.durable,
                                   arguments=self.arguments)
        self.channel.queue_bind(self.queue, EXCHANGE, routing_key=self.binding)

    def drain(self, *, until: int | Callable[[list[dict[str, Any]]], bool] | None = None,
              timeout: float = 10) -> list[dict[str, Any]]:
        """Collect deliveries (with their AMQP properties) until `until` (a count, or a predicate on
        what was received) is met, or the queue is empty with no `until`, or time runs out."""
        done = (lambda got: len(got) >= until) if isinstance(until, int) else until
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                # Acked only once recorded: a connection lost in between redelivers, never loses.
                method, properties, body = self.channel.basic_get(self.queue, auto_ack=False)
            except (pika.exceptions.AMQPError, OSError):
                if not self.durable:
                    raise
                time.sleep(0.5)
                try:
                    self._connect()
                except (pika.exceptions.AMQPError, OSError):
                    pass  # the broker is still restarting
                continue
            if method is None:
                if done is None or done(self.received):
                    break
                time.sleep(0.1)
                continue
            self.received.append({"routing_key": method.routing_key, "message_id": properties.message_id,
                                  "persistent": properties.delivery_mode == 2, "body": json.loads(body)})
            try:
                self.channel.basic_ack(method.delivery_tag)
            except (pika.exceptions.AMQPError, OSError):
                if not self.durable:
                    raise
        return self.received

    def close(self) -> None:
        try:
            if self.durable and self.channel.is_open:
                self.channel.queue_delete(self.queue)
            if self.connection.is_open:
                self.connection.close()
        except (pika.exceptions.AMQPError, OSError):
            pass


def take_messages(broker_url: str, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
    """Every message ready in `queue`, oldest first, taken (acked): the queue is left empty."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    taken = []
    try:
        channel = connection.channel()
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return taken
            taken.append((properties, body))
    finally:
        connection.close()
