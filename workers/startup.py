"""What a worker process checks once at start, before its consumers run (workers/__init__.py).

- Its queues are declared now (`FulfilmentBroker.ensure_declared`): a queue that exists with the
  other type stops the worker with one line naming `fulfil queues migrate`, instead of every
  consumer thread logging a traceback every three seconds.
- Whether an order intent committed on the primary is on a synchronous standby
  (fulfilment/replication.py), by SYNC_STANDBY_POLICY: `warn` says so in one line, `require`
  refuses to start.

A broker or database that cannot be reached is not a reason to stop: the worker starts and
waits for it, as it always has (its consumers reconnect; the steps retry).
"""

from __future__ import annotations

import logging
import sys

import dramatiq.errors
import pika.exceptions

from fulfilment.rabbitmq.broker import FulfilmentBroker, QueueMismatch
from fulfilment.settings import Settings

log = logging.getLogger("fulfilment.workers.startup")


def check_at_start(broker: FulfilmentBroker, settings: Settings) -> None:
    try:
        broker.ensure_declared()
    except QueueMismatch as error:
        print(f"ticket-fulfilment worker cannot start: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except (dramatiq.errors.ConnectionError, pika.exceptions.AMQPError, OSError) as error:
        # OSError: a host name that does not resolve (pika lets socket.gaierror through).
        log.warning("broker unreachable at start; the consumers will declare their queues once it is back (%s)",
                    type(error).__name__)
    finally:
        del broker.connection  # this thread publishes nothing: no idle connection left to time out

    from fulfilment.replication import DurabilityRefused, check_durability_at_start

    try:
        check_durability_at_start(settings)
    except DurabilityRefused as error:
        print(f"ticket-fulfilment worker cannot start: {error}", file=sys.stderr)
        raise SystemExit(2) from None
