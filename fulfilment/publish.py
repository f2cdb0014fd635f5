"""Submitting purchase requests from Python, for other services (the public entry point).

    from fulfilment.publish import submit
    purchase_id = submit({"request_id": "...", ...}, broker_url="amqp://...")

    from fulfilment.publish import Publisher   # one connection for many submissions
    with Publisher("amqp://...") as publisher:
        publisher.submit({...})

The request is validated first (a ValidationError names every bad field), then published
with publisher confirms to the `purchases.intake` queue (fulfilment/rabbitmq/publisher.py).
Publishers in other languages send the same JSON (docs/request-format.md).

    from fulfilment.publish import request_ticket_refresh   # a ticket is being displayed
    request_ticket_refresh(purchase_id, broker_url="amqp://...")

asks for fresh SafeTix tokens now; they come back in a `purchase.tickets_refreshed` event.
"""

from fulfilment.rabbitmq.publisher import Publisher, request_ticket_refresh, submit

__all__ = ["Publisher", "request_ticket_refresh", "submit"]
