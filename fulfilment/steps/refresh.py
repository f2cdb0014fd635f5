"""Ticket refreshes (SafeTix: a new token for the same barcode), for partners that issue tickets.

- Scheduled: each ticket with a token is refreshed once, at `refresh_due_at` (event start - 20 h,
  set when the tickets were stored).  The scheduler's `schedule_refreshes` finds purchases with
  tickets due (index ix_tickets_refresh_due, a bounded batch), marks them sent for a while
  (`refresh_claimed_until`, so a tick does not send them again) and sends one `refresh_tickets`
  message per purchase.  None after the event started.
- On demand: another service (a ticket being displayed: `fulfilment.publish.request_ticket_refresh`)
  or an operator (`fulfil tickets refresh`) asks for a purchase's tickets now.

`refresh_tickets` (the worker) locks the purchase (FOR NO KEY UPDATE SKIP LOCKED) and its tickets for
the length of the partner call: a duplicate message, a second scheduler's message or an on-demand
request racing it finds them locked or refreshed, so each scheduled refresh happens once.  The new
tokens are stored encrypted and reach the requester in a `purchase.tickets_refreshed` event.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, text

from fulfilment import state_machine, ticket_crypto
from fulfilment.db import session_scope
from fulfilment.flowkit.fencing import step_deadline, step_started
from fulfilment.flowkit.flow import Partners
from fulfilment.flowkit.tickets import Refresher
from fulfilment.settings import Settings
from fulfilment.state_machine import State
from models import Purchase, Ticket

log = logging.getLogger(__name__)

# Purchases with a ticket due for its scheduled refresh, marked sent until `resend_seconds` from now.
DUE_SQL = text(
    """
    WITH due AS (
        SELECT id FROM tickets
         WHERE refresh_due_at <= now() AND refreshed_at IS NULL AND event_start > now()
           AND (refresh_claimed_until IS NULL OR refresh_claimed_until < now())
         ORDER BY refresh_due_at
         LIMIT :batch
           FOR UPDATE SKIP LOCKED
    )
    UPDATE tickets AS t SET refresh_claimed_until = now() + make_interval(secs => :resend_seconds)
      FROM due WHERE t.id = due.id
    RETURNING t.purchase_id
    """
)


def schedule_refreshes(settings: Settings, send: Callable[[uuid.UUID], object]) -> int:
    """The scheduler's job: send one refresh message per purchase with tickets due (a batch)."""
    with session_scope() as session:
        rows = session.execute(DUE_SQL, {"batch": settings.scheduler_batch_size,
                                         "resend_seconds": settings.redrive_after_seconds}).scalars().all()
    purchases = list(dict.fromkeys(rows))
    for purchase_id in purchases:
        try:
            send(purchase_id)
        except Exception:
            log.warning("could not send the ticket refresh of %s; sent again in %g s", purchase_id,
                        settings.redrive_after_seconds, exc_info=True)
    return len(purchases)


def refresh_tickets(purchase_id: uuid.UUID, *, partners: Partners, settings: Settings, on_demand: bool,
                    message_id: str | None = None, device: dict[str, Any] | None = None) -> int:
    """Refresh the purchase's due tickets (all of them `on_demand`); returns how many got a new token.

    Raises what the partner call raises for a transient failure (the message is retried; nothing
    was recorded: the lock is released with the rolled-back transaction)."""
    started = step_started()
    key = settings.ticket_key
    if key is None:
        raise RuntimeError("TICKET_KEY is not set: tickets cannot be refreshed")
    with session_scope() as session:
        # One refresh of a purchase at a time, all its tickets together: a concurrent one (a duplicate
        # message, another scheduler's, an on-demand request) finds the purchase locked and does nothing.
        # NO KEY UPDATE: the history rows other transactions add for it are not blocked.
        purchase = session.scalars(select(Purchase).where(Purchase.id == purchase_id)
                                   .with_for_update(skip_locked=True, key_share=True)).one_or_none()
        if purchase is None:
            exists = session.get(Purchase, purchase_id) is not None
            log.info("ticket refresh for %s: %s; nothing to do", purchase_id,
                     "being refreshed by another worker" if exists else "no such purchase")
            return 0
        if purchase.state != State.TICKETS_ISSUED:
            log.info("ticket refresh for %s: it is %s; nothing to do", purchase_id, purchase.state)
            return 0
        flow = partners.flow(purchase.partner)
        if not isinstance(flow, Refresher):
            log.warning("purchase %s: partner %r is not enabled here or refreshes no tickets", purchase_id,
                        purchase.partner)
            return 0
        query = select(Ticket).where(Ticket.purchase_id == purchase_id, Ticket.token_encrypted.is_not(None),
                                     Ticket.voided.is_(False))
        if not on_demand:
            query = query.where(Ticket.refreshed_at.is_(None), Ticket.refresh_due_at <= text("now()"),
                                Ticket.event_start > text("now()"))
        tickets = list(session.scalars(query.order_by(Ticket.position).with_for_update(skip_locked=True)))
        if not tickets:
            return 0
        results = flow.refresh(purchase, tickets, key=key, deadline=step_deadline(settings, started), device=device)
        by_id = {ticket.id: ticket for ticket in tickets}
        now = dt.datetime.now(dt.UTC)
        event_tickets = []
        for result in results:
            ticket = by_id[result.ticket_id]
            if result.token is not None:
                ticket.token_encrypted = ticket_crypto.encrypt(key, result.token)
                ticket.updated_at = now
            if not on_demand:
                ticket.refreshed_at = now  # a refusal is not retried either: it is in the event
            event_tickets.append(ticket_crypto.seal_ticket(key, {
                "barcode": ticket.barcode, "section": ticket.section, "row": ticket.row, "seat": ticket.seat,
                "render_type": ticket.render_type, "error": result.error}, result.token))
        trigger = "on_demand" if on_demand else "scheduled"
        fresh = sum(1 for result in results if result.token is not None)
        state_machine.note(
            session, purchase, kind="tickets_refreshed", event_type="purchase.tickets_refreshed",
            reason=f"{fresh} of {len(results)} ticket(s) refreshed ({trigger})", message_id=message_id,
            extra={"tickets": event_tickets, "refresh": {"trigger": trigger}})
    return fresh
