"""The RabbitMQ queues of the pipeline, and their depths for the operator gauges."""

from __future__ import annotations

import pika
import pika.exceptions
from dramatiq.common import xq_name

from fulfilment.outbox import UNROUTED

QUEUES = ("purchases.intake", "purchases.quote", "purchases.order", "purchases.transfer")
DEAD_LETTER_QUEUES = tuple(xq_name(queue) for queue in QUEUES)
# What the scheduler's gauges report (fulfilment/scheduler.py update_gauges): main-queue depth,
# dead letters, and events no consumer queue was bound for (fulfilment/outbox.py).
GAUGED_QUEUES = (*QUEUES, *DEAD_LETTER_QUEUES, UNROUTED)


def queue_depths(broker_url: str, queues: tuple[str, ...] = GAUGED_QUEUES) -> dict[str, int]:
    """Messages ready in each queue (passive declares: nothing is created or consumed), over one connection.

    A queue that does not exist yet (no worker ever declared it) counts as empty.
    """
    depths: dict[str, int] = {}
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
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
