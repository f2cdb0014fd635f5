"""How a step reaches the partner of the purchase it claimed: one protocol, `PartnerFlow`.

The step (fulfilment/steps/) claims the purchase, checks what every purchase must respect (the
delivery deadline, the re-quote limit), then hands the claimed purchase to its partner's flow,
which calls its partner and records the outcome with the fenced primitives of this kit
(flowkit/fencing.py, flowkit/orders.py), the intent before an order included.

The partner is chosen per purchase, after the claim (`Partners.flow`); one process serves every
enabled partner.  `fulfilment/partners/registry.py` builds the `Partners` of a worker from settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fulfilment.flowkit.fencing import Next, park
from fulfilment.settings import Settings
from fulfilment.state_machine import State
from models import Purchase

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a flow needs of the step that claimed the purchase."""

    settings: Settings
    message_id: str | None
    started: float  # flowkit.fencing.step_started() of the claim: step_deadline(settings, started)
    hand_over: bool = False  # the quote keeps its claim for the order step run in line


class PartnerFlow(Protocol):
    """The partner part of each step: every partner is one (partners/<name>/flow.py).

    Each method gets the purchase claimed (its lease held, in the state named) and must end the
    step: record a transition, park the purchase (`flowkit.fencing.park`) or release it for a retry
    (`release_and_retry`, raising `RetryLater`); it returns the step to nudge next, if any.
    """

    name: str
    # The state a purchase of this partner waits in once its order is confirmed.
    ordered_state: State
    # Whether the core ends the resolution of an unknown order after ORDER_RESOLVE_ATTEMPTS claims
    # (steps/order.resolve_order); a flow that counts its own waits says False (TM: a commit still
    # being processed is polled against its cart's window, never against a number of polls).
    limits_resolve_attempts: bool

    def quote(self, purchase: Purchase, step: StepContext) -> Next | None:
        """RECEIVED or PAUSED -> QUOTED (or FAILED, PAUSED, parked)."""

    def order(self, purchase: Purchase, step: StepContext) -> Next | None:
        """QUOTED, claimed: place the order (the flow records the intent before anything is sent)."""

    def resolve(self, purchase: Purchase, step: StepContext) -> Next | None:
        """ORDER_UNKNOWN: find out whether the order exists; never order twice."""

    def deliver(self, purchase: Purchase, step: StepContext) -> Next | None:
        """`ordered_state`: fetch what was bought and finish the purchase."""

    def release(self, purchase: Purchase, settings: Settings) -> None:
        """The purchase ended before any order (deadline, re-quote limit, an operator's cancel): let go
        of what the partner holds for it (TM: delete its carts, never left to lapse).  Best effort,
        never raises, records nothing."""


@dataclass(frozen=True)
class PartnerSpec:
    """A partner, as it registers (`PARTNER` in its module; partners/registry.py loads them).

    `enabled(settings)`: whether this process calls it (its *_ENABLED switch); `build(settings)`: its
    flow; `request`: its request shape (a pydantic model with `partner: Literal["<name>"]`, of the
    quote/order kind: a subclass of requests.PurchaseRequest), for a partner whose shape is not one of
    requests.py's own.
    """

    name: str
    enabled: Callable[[Settings], bool]
    build: Callable[[Settings], PartnerFlow]
    request: type[Any] | None = None


class PartnerNotEnabled(Exception):
    """The purchase's partner is not enabled in this process: it waits, untouched, for one that is."""

    def __init__(self, name: str) -> None:
        super().__init__(f"partner {name!r} is not enabled in this process (its *_ENABLED setting)")
        self.name = name


@dataclass(frozen=True)
class Partners:
    """Every partner this process may call, by the name purchases carry (`purchases.partner`).

    `default`: the flow of purchases whose partner has no entry (tests and tools that drive one
    fake partner for all purchases).
    """

    flows: Mapping[str, PartnerFlow] = field(default_factory=dict)
    default: PartnerFlow | None = None

    @classmethod
    def of(cls, partner: PartnerFlow | Partners) -> Partners:
        return partner if isinstance(partner, Partners) else cls(default=partner)

    def flow(self, name: str) -> PartnerFlow | None:
        return self.flows.get(name, self.default)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.flows)

    def close(self) -> None:
        for partner in (*self.flows.values(), self.default):
            close = getattr(partner, "close", None)
            if close is not None:
                close()


def park_not_enabled(purchase: Purchase, settings: Settings, message_id: str | None) -> None:
    """Park a claimed purchase whose partner is not enabled in this process: it waits, nothing burnt
    (an operator enables the partner, or a worker that has it takes the purchase at its next action)."""
    error = PartnerNotEnabled(purchase.partner)
    log.error("purchase %s: %s; it waits %g s", purchase.id, error, settings.payment_pause_seconds)
    park(purchase, next_action_in=settings.payment_pause_seconds, error=str(error), message_id=message_id)
