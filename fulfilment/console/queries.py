"""What the console's pages read from Postgres and RabbitMQ (blocking: called in a thread).

The dashboard reuses the scheduler's own queries (fulfilment/scheduler.py: read_live_counts,
scheduler_leader) and the gauges' queue depths (fulfilment/rabbitmq/queues.py); actions are not here but
in fulfilment/steps/operator.py, which the CLI calls too.  Nothing read here carries a secret:
the claim token of a purchase, the only token in its row, is never selected into a view.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text

from fulfilment.db import session_scope
from fulfilment.scheduler import Leader, LiveCounts, read_live_counts, scheduler_leader
from fulfilment.state_machine import HELD_FOR_OPERATOR, NEXT_STEP, TERMINAL, State
from models import DeadlineFlag, OrphanOrder, OutboxEvent, PartnerQuote, Purchase, PurchaseTransition, RejectedRequest

# How far back the dashboard counts finished purchases (by creation, index-backed).
FINISHED_WINDOW_HOURS = 24
LIST_LIMIT = 200

FINISHED_COUNTS_SQL = text(
    """
    SELECT state, count(*)
      FROM purchases
     WHERE state = ANY(:states) AND created_at >= now() - make_interval(hours => :hours)
     GROUP BY state
    """
)


@dataclass(frozen=True)
class Dashboard:
    live: LiveCounts
    finished: dict[str, int]  # terminal states, purchases created in the last FINISHED_WINDOW_HOURS
    leader: Leader | None
    held: list[Purchase]  # the newest purchases waiting for a person


@dataclass(frozen=True)
class Broker:
    depths: dict[str, int] | None  # None: RabbitMQ could not be read
    error: str | None

    @property
    def dead_letters(self) -> int:
        from fulfilment.rabbitmq.queues import DEAD_LETTER_QUEUES

        return sum((self.depths or {}).get(queue, 0) for queue in DEAD_LETTER_QUEUES)


def dashboard() -> Dashboard:
    with session_scope() as session:
        live = read_live_counts(session)
        finished = {state.value: 0 for state in TERMINAL}
        for state, count in session.execute(FINISHED_COUNTS_SQL, {"states": list(finished),
                                                                 "hours": FINISHED_WINDOW_HOURS}):
            finished[state] = count
        leader = scheduler_leader(session)
        held = list(session.scalars(
            select(Purchase).where(Purchase.state.in_([s.value for s in HELD_FOR_OPERATOR]))
            .order_by(Purchase.state_changed_at.desc()).limit(10)
        ))
    return Dashboard(live, finished, leader, held)


def broker_status(broker_url: str) -> Broker:
    """Queue depths (main queues, dead letters, unrouted events), or one line saying why not."""
    from fulfilment.dependencies import broker_unavailable, location, reason
    from fulfilment.rabbitmq.queues import queue_depths

    try:
        return Broker(queue_depths(broker_url), None)
    except Exception as error:  # noqa: BLE001  any failure is shown as one line, never a traceback
        known = broker_unavailable(error, broker_url)
        return Broker(None, str(known) if known else f"RabbitMQ at {location(broker_url)}: {reason(error)}")


def purchases_in(state: State, *, limit: int = LIST_LIMIT) -> tuple[list[Purchase], int]:
    """The newest purchases in one state, and how many there are in it."""
    with session_scope() as session:
        rows = list(session.scalars(select(Purchase).where(Purchase.state == state.value)
                                    .order_by(Purchase.created_at.desc()).limit(limit)))
        total = session.scalar(select(func.count()).select_from(Purchase).where(Purchase.state == state.value))
    return rows, int(total or 0)


def search(query: str) -> uuid.UUID | None:
    """A purchase by its id, the request_id it was submitted with, or its partner order id."""
    from fulfilment.steps.operator import find_purchase_id

    query = query.strip()
    if not query:
        return None
    with session_scope() as session:
        found = find_purchase_id(session, query)
        if found is None:
            found = session.scalar(select(Purchase.id).where(Purchase.order_id == query))
        return found


@dataclass(frozen=True)
class PurchaseDetail:
    purchase: Purchase
    quotes: list[PartnerQuote]
    history: list[PurchaseTransition]
    events: list[OutboxEvent]
    flags: list[DeadlineFlag]
    orphans: list[OrphanOrder]
    now: dt.datetime

    @property
    def state(self) -> State:
        return State(self.purchase.state)

    @property
    def live(self) -> bool:
        return self.state in NEXT_STEP

    @property
    def can_retry(self) -> bool:
        return self.state in HELD_FOR_OPERATOR or self.state is State.PAUSED

    @property
    def can_cancel(self) -> bool:
        from fulfilment.steps.operator import CANCELLABLE

        if self.state in CANCELLABLE:
            return True
        if self.state is State.STALLED:
            return self.purchase.stalled_from in {s.value for s in CANCELLABLE}
        return self.state is State.NEEDS_ATTENTION and not self.purchase.order_id

    @property
    def can_resolve(self) -> bool:
        from fulfilment.steps.operator import ORDER_PATH, RESOLVABLE

        if self.purchase.order_id:
            return False
        return self.state in RESOLVABLE or (
            self.state is State.STALLED and self.purchase.stalled_from in {s.value for s in ORDER_PATH})


def purchase_detail(purchase_id: uuid.UUID) -> PurchaseDetail | None:
    from fulfilment.state_machine import history

    with session_scope() as session:
        purchase = session.get(Purchase, purchase_id)
        if purchase is None:
            return None
        return PurchaseDetail(
            purchase=purchase,
            quotes=list(session.scalars(select(PartnerQuote).where(PartnerQuote.purchase_id == purchase_id)
                                        .order_by(PartnerQuote.id))),
            history=history(session, purchase_id),
            events=list(session.scalars(select(OutboxEvent).where(OutboxEvent.purchase_id == purchase_id)
                                        .order_by(OutboxEvent.transition_id))),
            flags=list(session.scalars(select(DeadlineFlag).where(DeadlineFlag.purchase_id == purchase_id)
                                       .order_by(DeadlineFlag.flagged_at))),
            orphans=list(session.scalars(select(OrphanOrder).where(OrphanOrder.purchase_id == purchase_id)
                                         .order_by(OrphanOrder.found_at))),
            now=session.execute(text("SELECT now()")).scalar_one(),
        )


def rejections_for(request_id: str) -> list[RejectedRequest]:
    from fulfilment.steps.operator import rejected_requests

    return rejected_requests(limit=20, request_id=request_id)


def event_payload(event: OutboxEvent) -> dict[str, Any]:
    """An event's payload for display, with any field named like a secret masked (none is expected)."""
    return _mask(event.payload)


_SECRET_WORDS = ("token", "secret", "password", "authorization")


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: "***" if any(word in str(key).lower() for word in _SECRET_WORDS) else _mask(item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [_mask(item) for item in value]
    return value
