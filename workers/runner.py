"""The dramatiq side of every purchase actor: run the step, turn RetryLater into a retry,
send the next step."""

from __future__ import annotations

import logging
import uuid

import dramatiq
from dramatiq.middleware import CurrentMessage

from fulfilment.flowkit.fencing import Next, RetryLater, retry_delay_seconds
from fulfilment.partners.registry import get_partners
from fulfilment.rabbitmq.publisher import send_step
from fulfilment.settings import get_settings
from fulfilment.step_names import StepName
from fulfilment.steps import runner
from fulfilment.steps.runner import InvalidMessage

log = logging.getLogger(__name__)

__all__ = ["InvalidMessage", "nudge", "run_step"]


def run_step(step: StepName, purchase_id: str) -> None:
    message = CurrentMessage.get_current_message()
    try:
        runner.run_step(step, purchase_id, partner=get_partners(), settings=get_settings(),
                        message_id=message.message_id if message else None, send=nudge)
    except RetryLater as error:
        if error.retry_after is not None:
            # Honour the partner's Retry-After, bounded by our own maximum backoff.
            delay_ms = int(retry_delay_seconds(error, get_settings()) * 1000)
            raise dramatiq.Retry(str(error), delay=max(delay_ms, 1)) from error
        raise


def nudge(following: Next, purchase_id: uuid.UUID) -> None:
    """Send the next step.  A failure here loses nothing: the scheduler re-drives it."""
    try:
        send_step(dramatiq.get_broker(), following.step, purchase_id, delay_seconds=following.delay_seconds)
    except Exception:
        log.warning("could not enqueue %s for %s; the scheduler will re-drive it", following.step, purchase_id,
                    exc_info=True)
