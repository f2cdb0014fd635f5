"""Submitting purchase requests from Python, for other services (the public entry point).

    from fulfilment.publish import submit
    purchase_id = submit({"request_id": "...", ...}, broker_url="amqp://...")

    from fulfilment.publish import Publisher   # one connection for many submissions
    with Publisher("amqp://...") as publisher:
        publisher.submit({...})

The request is validated first (a ValidationError names every bad field), then published
with publisher confirms to the `purchases.intake` queue (fulfilment/rabbitmq/publisher.py).
Publishers in other languages send the same JSON (docs/request-format.md).
"""

from fulfilment.rabbitmq.publisher import Publisher, submit

__all__ = ["Publisher", "submit"]
