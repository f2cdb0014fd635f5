"""What every purchase actor does around its step: parse the id, run, nudge the next step."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import dramatiq
from dramatiq.middleware import CurrentMessage

from fulfilment.partners.registry import get_partner
from fulfilment.settings import get_settings
from fulfilment.state_machine import StaleTransition
from fulfilment.steps.common import Next, RetryLater

log = logging.getLogger(__name__)

Step = Callable[..., Next | None]


class InvalidMessage(Exception):
    """The message itself is malformed; retrying cannot help (actors list it in `throws`)."""


def run_step(step: Step, purchase_id: str) -> None:
    try:
        pid = uuid.UUID(str(purchase_id))
    except ValueError:
        raise InvalidMessage(f"purchase_id must be a UUID, got {str(purchase_id)[:80]!r}") from None
    message = CurrentMessage.get_current_message()
    try:
        following = step(pid, partner=get_partner(), settings=get_settings(),
                         message_id=message.message_id if message else None)
    except StaleTransition as error:
        # Someone else (a racing redelivery, an operator) moved it first: nothing left to do.
        log.info("%s", error)
        return
    except RetryLater as error:
        if error.retry_after is not None:
            # Honour the partner's Retry-After, bounded by our own maximum backoff.
            delay_ms = int(min(error.retry_after, get_settings().actor_max_backoff_ms / 1000) * 1000)
            raise dramatiq.Retry(str(error), delay=max(delay_ms, 1)) from error
        raise
    if following is not None:
        nudge(following, pid)


def nudge(following: Next, purchase_id: uuid.UUID) -> None:
    """Send the next step.  A failure here loses nothing: the scheduler re-drives it."""
    try:
        actor = dramatiq.get_broker().get_actor(following.step)
        actor.send_with_options(args=(str(purchase_id),), delay=int(following.delay_seconds * 1000) or None)
    except Exception:
        log.warning("could not enqueue %s for %s; the scheduler will re-drive it", following.step, purchase_id,
                    exc_info=True)
