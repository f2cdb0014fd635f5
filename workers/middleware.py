"""Small dramatiq middleware of our own."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware

from fulfilment import logging_setup
from fulfilment.step_names import StepName
from fulfilment.steps.stall import stall_after_exhausted_retries

log = logging.getLogger(__name__)

# Actors whose first argument is a purchase id.
PURCHASE_ACTORS = frozenset(StepName)


class MessageLogContext(Middleware):
    """Every log line written while a message is processed carries its ids."""

    def __init__(self) -> None:
        self._local = threading.local()

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        context: dict[str, Any] = {"message_id": message.message_id, "actor": message.actor_name}
        if message.actor_name in PURCHASE_ACTORS and message.args:
            context["purchase_id"] = message.args[0]
        elif message.args and isinstance(message.args[0], dict):
            context["request_id"] = message.args[0].get("request_id")
        self._local.token = logging_setup.bind(**context)

    def after_process_message(
        self, broker: dramatiq.Broker, message: MessageProxy, *, result: Any = None, exception: Any = None
    ) -> None:
        token = getattr(self._local, "token", None)
        if token is not None:
            logging_setup.unbind(token)
            self._local.token = None

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self.after_process_message(broker, message)


class StallOnExhaustedRetries(Middleware):
    """When dramatiq gives up on a purchase's message, make the purchase visibly STALLED.

    The dead message also lands in the queue's `.XQ` (which expires after 7 days);
    Postgres is the durable record, with the last error.
    """

    def after_process_message(
        self, broker: dramatiq.Broker, message: MessageProxy, *, result: Any = None, exception: Any = None
    ) -> None:
        if exception is None or not message.failed or message.actor_name not in PURCHASE_ACTORS:
            return
        try:
            purchase_id = uuid.UUID(str(message.args[0]))
        except (IndexError, ValueError):
            return  # not a purchase message at all; it is in the XQ with its error
        error = f"{type(exception).__name__}: {exception}"[:2000]
        try:
            stall_after_exhausted_retries(purchase_id, step=message.actor_name, message_id=message.message_id,
                                          retries=message.options.get("retries", 0), error=error)
        except Exception:
            log.exception("could not mark purchase %s stalled; the scheduler will find it overdue", purchase_id)
