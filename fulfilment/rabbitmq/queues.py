"""The RabbitMQ queues of the pipeline, and their depths for the operator gauges."""

from __future__ import annotations

import pika
import pika.exceptions
from dramatiq.common import xq_name

from fulfilment.rabbitmq.broker import node_parameters
from fulfilment.step_names import StepName

# The events (fulfilment/rabbitmq/outbox.py): a topic exchange, and where events that no queue
# was bound for are kept (an exchange and its one queue, same name).
EXCHANGE = "fulfilment.events"
UNROUTED = "fulfilment.events.unrouted"

INTAKE_QUEUE = "purchases.intake"
INTAKE_ACTOR = "submit_purchase"
# The queue of each step's actor (workers/*.py declare their actors with these), so that a
# process can send a step without importing the workers (rabbitmq.publisher.send_step).
STEP_QUEUES: dict[StepName, str] = {
    StepName.QUOTE: "purchases.quote",
    StepName.ORDER: "purchases.order",
    StepName.RESOLVE: "purchases.order",
    StepName.TRANSFER: "purchases.transfer",
    StepName.TICKETS: "purchases.tickets",
}
# Ticket refreshes (steps/refresh.py) ride on the tickets queue: not a step of the state machine.
REFRESH_ACTOR = "refresh_tickets"
REFRESH_QUEUE = STEP_QUEUES[StepName.TICKETS]
QUEUES = tuple(dict.fromkeys((INTAKE_QUEUE, *STEP_QUEUES.values())))
DEAD_LETTER_QUEUES = tuple(xq_name(queue) for queue in QUEUES)
# What the scheduler's gauges report (fulfilment/scheduler/gauges.py update_gauges): main-queue depth,
# dead letters, and events no consumer queue was bound for (fulfilment/rabbitmq/outbox.py).
GAUGED_QUEUES = (*QUEUES, *DEAD_LETTER_QUEUES, UNROUTED)


def queue_depths(broker_url: str, queues: tuple[str, ...] = GAUGED_QUEUES) -> dict[str, int]:
    """Messages ready in each queue (passive declares: nothing is created or consumed), over one connection.

    A queue that does not exist yet (no worker ever declared it) counts as empty.
    """
    depths: dict[str, int] = {}
    connection = pika.BlockingConnection(node_parameters(broker_url))  # any node of a cluster
    try:
        for queue in queues:
            channel = connection.channel()
            try:
                depths[queue] = channel.queue_declare(queue, passive=True).method.message_count
                channel.close()
            except pika.exceptions.ChannelClosedByBroker:
                depths[queue] = 0
    finally:
        if connection.is_open:
            connection.close()
    return depths
