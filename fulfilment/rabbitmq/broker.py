"""dramatiq's RabbitmqBroker, extended (not forked) for a RabbitMQ cluster.

dramatiq declares every actor queue, its delay queue (`.DQ`) and its dead-letter queue (`.XQ`)
as classic queues, and its maintainers declined quorum queues.  `FulfilmentBroker` changes
only the arguments of those three declarations:

- `queue_type="quorum"`: `x-queue-type: quorum` on all three (replicated with Raft on the
  cluster's nodes; a node's loss keeps every message), and `x-delivery-limit` on the actor and
  delay queues: a message delivered that many times without an ack (a poison message that kills
  its worker, again and again) is dead-lettered by RabbitMQ itself into the `.XQ`, where
  `fulfil dlq` lists it like the others.  Dead letters keep dramatiq's TTL (7 days).
- a queue that exists with other arguments (the other type, another delivery limit) is not
  retried six times as dramatiq does with any channel error: `QueueMismatch` says so in one line
  and names the command that moves it (`fulfil queues migrate`, fulfilment/rabbitmq/migrate.py).

Several nodes: `url` may name several, separated by ';' (dramatiq's own convention, a list of
pika parameters): every connection, the consumers' included, tries them in turn, so a process
whose node died reconnects to a surviving one.  This process's order is rotated by a random
offset so that connections spread over the nodes.  Publisher confirms are kept: dramatiq turns
them on for every new channel.
"""

from __future__ import annotations

import random
from typing import Any

import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker
from dramatiq.common import dq_name, q_name, xq_name

from fulfilment.outages import BROKER

QUEUE_TYPES = ("classic", "quorum")
MIGRATE_COMMAND = "fulfil queues migrate"


class QueueMismatch(RuntimeError):
    """A queue exists with arguments other than ours (e.g. classic where quorum is configured)."""

    def __init__(self, queue: str, reply_text: str, queue_type: str) -> None:
        super().__init__(
            f"RabbitMQ queue {queue!r} exists with other arguments than BROKER_QUEUE_TYPE={queue_type} "
            f"asks for ({reply_text}); stop the workers and the scheduler, then run `{MIGRATE_COMMAND}` "
            "to move its messages into a queue declared as configured")
        self.queue = queue


def node_parameters(broker_url: str) -> list[pika.URLParameters]:
    """pika parameters for each node named in `broker_url` (';'-separated), in this process's order."""
    nodes = [pika.URLParameters(url.strip()) for url in broker_url.split(";") if url.strip()]
    start = random.randrange(len(nodes)) if nodes else 0
    return nodes[start:] + nodes[:start]


def queue_arguments(queue_name: str, *, queue_type: str, delivery_limit: int) -> dict[str, Any]:
    """The arguments of an actor queue or its delay queue (both dead-letter into the actor's `.XQ`)."""
    arguments: dict[str, Any] = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": xq_name(queue_name)}
    if queue_type == "quorum":
        arguments |= {"x-queue-type": "quorum", "x-delivery-limit": delivery_limit}
    return arguments


def dead_queue_arguments(*, queue_type: str) -> dict[str, Any]:
    """The arguments of a `.XQ` (dramatiq's: a fixed TTL, since messages expire head first)."""
    arguments: dict[str, Any] = {"x-message-ttl": DEAD_MESSAGE_TTL}
    if queue_type == "quorum":
        arguments["x-queue-type"] = "quorum"
    return arguments


def declarations(queue_name: str, *, queue_type: str, delivery_limit: int) -> list[tuple[str, dict[str, Any]]]:
    """Each queue dramatiq declares for an actor queue (itself, `.DQ`, `.XQ`), with its arguments."""
    canonical = q_name(queue_name)
    shared = queue_arguments(canonical, queue_type=queue_type, delivery_limit=delivery_limit)
    return [(canonical, shared), (dq_name(canonical), shared),
            (xq_name(canonical), dead_queue_arguments(queue_type=queue_type))]


class FulfilmentBroker(RabbitmqBroker):
    """RabbitmqBroker with the queue type and delivery limit of BROKER_QUEUE_TYPE / BROKER_DELIVERY_LIMIT."""

    def __init__(self, *, url: str, queue_type: str = "classic", delivery_limit: int = 20, **kwargs: Any) -> None:
        if queue_type not in QUEUE_TYPES:
            raise ValueError(f"queue_type must be one of {QUEUE_TYPES}")
        super().__init__(url=url, **kwargs)
        self.parameters = node_parameters(url)  # dramatiq's list, in this process's order
        self.queue_type = queue_type
        self.delivery_limit = delivery_limit

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        arguments = queue_arguments(queue_name, queue_type=self.queue_type, delivery_limit=self.delivery_limit)
        if self.max_priority and self.queue_type == "classic":
            arguments["x-max-priority"] = self.max_priority
        return arguments

    def _declare_queue(self, queue_name: str) -> Any:
        return self._declared(queue_name, lambda: super(FulfilmentBroker, self)._declare_queue(queue_name))

    def _declare_dq_queue(self, queue_name: str) -> Any:
        return self._declared(dq_name(queue_name),
                              lambda: super(FulfilmentBroker, self)._declare_dq_queue(queue_name))

    def _declare_xq_queue(self, queue_name: str) -> Any:
        return self._declared(xq_name(queue_name), lambda: self.channel.queue_declare(
            queue=xq_name(queue_name), durable=True, arguments=dead_queue_arguments(queue_type=self.queue_type)))

    def _declared(self, name: str, declare: Any) -> Any:
        try:
            return declare()
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code != 406:  # PRECONDITION_FAILED: inequivalent arguments
                raise
            del self.channel  # closed by the broker: the next caller opens another
            raise QueueMismatch(name, error.reply_text, self.queue_type) from None

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        consumer = super().consume(queue_name, prefetch, timeout)
        BROKER.recovered()  # a consumer connected: the "back" line of an outage (fulfilment/outages.py)
        return consumer

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        sent = super().enqueue(message, delay=delay)
        BROKER.recovered()
        return sent

    def ensure_declared(self) -> None:
        """Declare every queue of this broker's actors now (a worker at start): raises QueueMismatch
        at once, instead of in every consumer thread, when one exists with other arguments."""
        for queue in sorted(self.queues):
            self.declare_queue(queue, ensure=True)
