"""Transfer monitor step: AWAITING_TRANSFER → TRANSFER_COMPLETE | TRANSFER_EXPIRED | CANCELLED.

Checks are scheduled from Postgres (`next_action_at`), never by long broker delays
(invariant 7); the polling interval tightens as the delivery deadline nears.
"""

from __future__ import annotations

import datetime as dt
import uuid

from fulfilment import state_machine
from fulfilment.db import autocommit
from fulfilment.partners.base import ORDER_FINAL_STATUSES, NotFound, Partner, PartnerError, PermanentError
from fulfilment.settings import Settings
from fulfilment.state_machine import State
from fulfilment.steps.common import (
    Next,
    failure,
    note_late,
    partner_request_id,
    record,
    release_and_retry,
    step_deadline,
    step_started,
)
from fulfilment.steps.flow import Partners, client_or_park

FINAL_STATE_FOR_STATUS = {
    "transfer_complete": State.TRANSFER_COMPLETE,
    "transfer_expired": State.TRANSFER_EXPIRED,
    "cancelled": State.CANCELLED,
}
assert set(FINAL_STATE_FOR_STATUS) == ORDER_FINAL_STATUSES


def check_transfer(
    purchase_id: uuid.UUID, *, partner: Partner | Partners, settings: Settings, message_id: str | None = None
) -> Next | None:
    started = step_started()
    with autocommit() as db:
        purchase = state_machine.claim(
            db, purchase_id, [State.AWAITING_TRANSFER], lease_seconds=settings.claim_lease_seconds,
            only_if_due=True,  # a duplicate nudge finds the next check in the future and does nothing
        )
        if purchase is None:
            return None
    assert purchase.order_id is not None
    client = client_or_park(Partners.of(partner), purchase, settings, message_id)
    if client is None:
        return None
    try:
        order = client.get_order(purchase.order_id, request_id=partner_request_id(purchase, "status"),
                                  deadline=step_deadline(settings, started))
    except (NotFound, PermanentError) as error:
        record(purchase, State.NEEDS_ATTENTION, f"order status unreadable: {error.code}", message_id,
               changes=failure(error.code, error.message))
        return None
    except PartnerError as error:
        raise release_and_retry(purchase, error, settings) from error

    final = FINAL_STATE_FOR_STATUS.get(order.status)
    if final is not None:
        record(purchase, final, f"partner reports {order.status}", message_id,
               changes={"order_status": order.status, "last_error": None})
        return None
    with autocommit() as db:
        still_ours = state_machine.reschedule(
            db, purchase, next_action_in=poll_interval(purchase.delivery_deadline, settings),
            order_status=order.status,
        )
    if not still_ours:
        note_late(purchase, f"order {order.order_id} is {order.status}", message_id)
    return None


def poll_interval(deadline: dt.datetime, settings: Settings, now: dt.datetime | None = None) -> float:
    """A quarter of the time left, between the configured minimum and maximum."""
    now = now or dt.datetime.now(dt.UTC)
    left = (deadline - now).total_seconds()
    return max(settings.transfer_poll_min_seconds, min(settings.transfer_poll_seconds, left / 4))
