"""A consumer bound to `fulfilment.events`, as a requesting service would bind one."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pika

from fulfilment.outbox import EXCHANGE


class EventListener:
    def __init__(self, broker_url: str, binding: str = "purchase.#") -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(broker_url))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
        self.queue = f"test-events-{uuid.uuid4().hex[:8]}"
        self.channel.queue_declare(self.queue, exclusive=True)
        self.channel.queue_bind(self.queue, EXCHANGE, routing_key=binding)
        self.received: list[dict[str, Any]] = []

    def drain(self, *, until: int | Callable[[list[dict[str, Any]]], bool] | None = None,
              timeout: float = 10) -> list[dict[str, Any]]:
        """Collect deliveries (with their AMQP properties) until `until` (a count, or a predicate on
        what was received) is met, or the queue is empty with no `until`, or time runs out."""
        done = (lambda got: len(got) >= until) if isinstance(until, int) else until
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            method, properties, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                if done is None or done(self.received):
                    break
                time.sleep(0.1)
                continue
            self.received.append({"routing_key": method.routing_key, "message_id": properties.message_id,
                                  "persistent": properties.delivery_mode == 2, "body": json.loads(body)})
        return self.received

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()
