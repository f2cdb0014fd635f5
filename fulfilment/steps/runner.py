"""Running one step for one message: what every purchase actor does, without dramatiq.

`workers/runner.py` adapts it to dramatiq (retries, the next message); tests drive the
same function with a fake partner and their own `send`, so nothing is copied.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Literal

from fulfilment import logging_setup, state_machine
from fulfilment.db import autocommit
from fulfilment.flowkit.fencing import Claim, Next, RetryLater, retry_delay_seconds, step_started
from fulfilment.flowkit.flow import PartnerFlow, Partners
from fulfilment.settings import Settings
from fulfilment.state_machine import StaleTransition
from fulfilment.step_names import StepName
from fulfilment.steps import intake, order, quote, transfer

log = logging.getLogger(__name__)

Step = Callable[..., Next | None]
Send = Callable[[Next, uuid.UUID], None]


STEPS: Mapping[StepName, Step] = {
    StepName.QUOTE: quote.quote,
    StepName.ORDER: order.place_order,
    StepName.RESOLVE: order.resolve_order,
    StepName.TRANSFER: transfer.check_transfer,
    StepName.TICKETS: transfer.fetch_tickets,
}


# What comes before the first step: the intake actor, which stores the purchase.
Previous = StepName | Literal["intake"]
INTAKE: Literal["intake"] = "intake"
# The step that may run at once, in the same thread, after another, and the setting that allows it.
# The step before hands its claim over to it (`hands_over`).
INLINE: Mapping[Previous, tuple[StepName, Callable[[Settings], bool]]] = {
    INTAKE: (StepName.QUOTE, lambda settings: settings.quote_after_intake_inline),
    StepName.QUOTE: (StepName.ORDER, lambda settings: settings.order_after_quote_inline),
}


class InvalidMessage(Exception):
    """The message itself is malformed; retrying cannot help (actors list it in `throws`)."""


def parse_purchase_id(raw: object) -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise InvalidMessage(f"purchase_id must be a UUID, got {str(raw)[:80]!r}") from None


def parse_device(raw: object) -> dict[str, str] | None:
    """A fan's device from a message (an on-demand refresh), checked like a request's."""
    if raw is None:
        return None
    from pydantic import ValidationError

    from fulfilment.requests import FanDevice, explain

    try:
        return FanDevice.model_validate(raw).model_dump()
    except ValidationError as error:
        raise InvalidMessage(f"device: {explain(error)}") from None


def run_step(
    step: StepName | str, purchase_id: object, *, partner: PartnerFlow | Partners, settings: Settings, message_id: str | None,
    send: Send, claim: Claim | None = None,
) -> None:
    """Run `step` for the purchase and `send` the step that follows, if any.

    A purchase someone else moved first makes the message a no-op.  `RetryLater`
    propagates: the caller retries the message (the lease was given back).  `claim`: the
    purchase as the step before claimed and handed it over (in line, `deliver`).
    """
    pid = parse_purchase_id(purchase_id)
    name = StepName(step)
    extra: dict[str, object] = {}
    if claim is not None:
        extra["claim"] = claim
    if hands_over(name, settings):
        extra["hand_over"] = True  # the step that follows will run in line (deliver): keep the claim for it
    try:
        following = STEPS[name](pid, partner=partner, settings=settings, message_id=message_id, **extra)
    except StaleTransition as error:
        # Someone else (a racing redelivery, an operator) moved it first: nothing left to do.
        log.info("%s", error)
        return
    if following is not None:
        deliver(following, pid, after=name, partner=partner, settings=settings, message_id=message_id, send=send)


def take_in(raw: object, *, partner: PartnerFlow | Partners, settings: Settings, message_id: str | None,
            send: Send) -> uuid.UUID | None:
    """What the intake actor does with a request: store it as a purchase, then quote it, in line
    (born claimed for it, QUOTE_AFTER_INTAKE_INLINE) or by message.  Returns the new purchase's
    id, or None for a request_id seen before.  Raises what `intake.receive` raises (bad input,
    the database down); a failure of the quote after the purchase was stored is `deliver`'s to
    handle, never the intake message's."""
    quote_now = hands_over(INTAKE, settings)
    started = step_started()  # before the claim's lease is taken (flowkit.fencing.step_deadline)
    created = intake.receive(raw, settings=settings, message_id=message_id,
                             hold_claim_for=settings.claim_lease_seconds if quote_now else None)
    if created is None:
        return None
    claim = Claim(created, started) if quote_now else None
    deliver(Next(StepName.QUOTE, claim=claim), created.id, after=INTAKE, partner=partner, settings=settings,
            message_id=message_id, send=send)
    return created.id


def hands_over(after: Previous, settings: Settings) -> bool:
    """Whether `after`'s usual follower runs in line (`INLINE`), so `after` keeps its claim for it."""
    rule = INLINE.get(after)
    return rule is not None and rule[1](settings)


def runs_inline(after: Previous, following: Next, settings: Settings) -> bool:
    """Whether the step that follows `after` runs at once in this thread rather than as a
    message: the quote right after intake stored a new purchase (QUOTE_AFTER_INTAKE_INLINE),
    the order right after a recorded quote (ORDER_AFTER_QUOTE_INLINE).  Nothing delayed."""
    rule = INLINE.get(after)
    return not following.delay_seconds and rule is not None and following.step == rule[0] and rule[1](settings)


def deliver(following: Next, purchase_id: uuid.UUID, *, after: Previous, partner: PartnerFlow | Partners, settings: Settings,
            message_id: str | None, send: Send) -> None:
    """Run or send the step that follows `after`.

    Run in line (`runs_inline`), it saves a message hop (a publish with its confirm, a
    delivery, an ack: about a tenth of a purchase's worker CPU, issue 8) and the wait in the
    queue.  It claims the purchase exactly as its message would have, so a duplicate or late
    message for it stays a no-op.  If it cannot finish here, its message takes over: a
    transient failure sends it after the retry delay, anything else at once, so the step is
    never left to the scheduler's re-drive.
    """
    if not runs_inline(after, following, settings):
        _give_back(following.claim, settings)
        send(Next(following.step, following.delay_seconds), purchase_id)
        return
    try:
        with logging_setup.log_context(actor=f"{following.step} (inline)"):
            run_step(following.step, purchase_id, partner=partner, settings=settings, message_id=message_id,
                     send=send, claim=following.claim)
    except RetryLater as error:
        send(Next(following.step, retry_delay_seconds(error, settings)), purchase_id)
    except Exception:
        log.warning("%s for %s failed in line; sending it as a message", following.step, purchase_id, exc_info=True)
        _give_back(following.claim, settings)
        send(Next(following.step), purchase_id)


def _give_back(claim: Claim | None, settings: Settings) -> None:
    """Release a handed-over claim the step did not use, so that its message can claim at once.
    Fenced: if the step moved the purchase (or someone else holds it), nothing changes.  If even
    this fails, the lease lapses and the scheduler re-drives the purchase."""
    if claim is None:
        return
    try:
        with autocommit() as db:
            state_machine.release(db, claim.purchase, retry_in=settings.redrive_after_seconds)
    except Exception:
        log.warning("could not release the claim on %s; it lapses with its lease", claim.purchase.id, exc_info=True)
