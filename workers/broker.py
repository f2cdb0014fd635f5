"""The RabbitMQ broker, with the middleware that makes failures visible.

The broker is dramatiq's, extended for a RabbitMQ cluster (fulfilment/rabbitmq/broker.py: quorum
queues with a delivery limit when BROKER_QUEUE_TYPE=quorum, several nodes in BROKER_URL).
Publisher confirms are on: `send()` returns only once RabbitMQ has the message, so a
purchase is never "sent" into the void.  Retry backoff is short (design invariant 7:
dramatiq holds delayed messages unacked in worker memory, and RabbitMQ's
consumer_timeout would break long delays); anything longer is scheduled from Postgres.
"""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)
from dramatiq.middleware.prometheus import Prometheus

from fulfilment.rabbitmq.broker import FulfilmentBroker
from fulfilment.settings import Settings, get_settings
from workers.middleware import MessageLogContext, StallOnExhaustedRetries


def build_broker(settings: Settings) -> FulfilmentBroker:
    middleware = [
        AgeLimit(),
        TimeLimit(time_limit=10 * 60 * 1000),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        CurrentMessage(),
        Prometheus(),
        MessageLogContext(),
        # Before Retries in this list: dramatiq runs `after_*` hooks in reverse order, so
        # this one runs after Retries has decided whether to give up on the message.
        StallOnExhaustedRetries(),
        Retries(
            max_retries=settings.actor_max_retries,
            min_backoff=settings.actor_min_backoff_ms,
            max_backoff=settings.actor_max_backoff_ms,
        ),
    ]
    return FulfilmentBroker(url=settings.broker_url, queue_type=settings.broker_queue_type,
                            delivery_limit=settings.broker_delivery_limit, confirm_delivery=True,
                            middleware=middleware)


broker = build_broker(get_settings())
dramatiq.set_broker(broker)
