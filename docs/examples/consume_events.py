"""An example consumer of ticket-fulfilment events (for a requesting service).

    BROKER_URL=amqp://fulfil:fulfil@127.0.0.1:23672/%2F python docs/examples/consume_events.py

Binds a durable queue of its own to the topic exchange `fulfilment.events` (routing keys
`purchase.<state>`, `purchase.deadline_near`, and `request.rejected` for requests intake
refused, which never become purchases), acknowledges each event after handling
it, and de-duplicates on `event_id`: delivery is at-least-once, so the same event can
arrive twice (a relay restarted between publishing and recording it).  A real service
keeps the seen ids in its own database, in the same transaction as its reaction.

Events no queue is bound for (here: the states not in BINDINGS, or all events before this
queue was first bound) are not lost: the relay keeps them in the durable queue
`fulfilment.events.unrouted` (README, "Events for requesting services").  Declare the exchange
as below, without arguments, as the relay does: RabbitMQ refuses (406) a declaration whose
arguments differ from the exchange's.
"""

from __future__ import annotations

import json
import os

import pika

EXCHANGE = "fulfilment.events"
QUEUE = os.environ.get("EVENTS_QUEUE", "checkout-service.purchase-events")
BINDINGS = ("purchase.awaiting_transfer", "purchase.transfer_complete", "purchase.transfer_expired",
            "purchase.cancelled", "purchase.failed", "purchase.deadline_near", "request.rejected")

seen: set[str] = set()


def handle(event: dict) -> None:
    kind = event["type"]
    if kind == "request.rejected":  # docs/schemas/request-rejected.schema.json
        print(f"{event['request_id']}: rejected ({event['reason_code']}): {event['reason']}")
    elif kind == "purchase.awaiting_transfer":
        order = event["order"]
        print(f"{event['request_id']}: tell the customer to accept the transfer from {order['transfer_email']} "
              f"before {order['delivery_deadline']} (seats {order['seat_range']})")
    elif kind == "purchase.deadline_near":
        print(f"{event['request_id']}: remind the customer, deadline within {event['deadline_warning']['window_hours']} h")
    elif kind == "purchase.failed":
        print(f"{event['request_id']}: failed: {event['failure']['code']}: {event['failure']['message']}")
    else:
        print(f"{event['request_id']}: {event['state']}")


def on_message(channel, method, properties, body: bytes) -> None:  # type: ignore[no-untyped-def]
    event = json.loads(body)
    if event["event_id"] not in seen:
        handle(event)
        seen.add(event["event_id"])
    channel.basic_ack(method.delivery_tag)


def main() -> None:
    connection = pika.BlockingConnection(pika.URLParameters(os.environ["BROKER_URL"]))
    channel = connection.channel()
    channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    channel.queue_declare(QUEUE, durable=True)
    for key in BINDINGS:
        channel.queue_bind(QUEUE, EXCHANGE, routing_key=key)
    channel.basic_qos(prefetch_count=50)
    channel.basic_consume(QUEUE, on_message)
    try:
        channel.start_consuming()
    except KeyboardInterrupt:
        connection.close()


if __name__ == "__main__":
    main()
