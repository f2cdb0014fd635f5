"""Deliver and refresh: order management -> tickets stored (tokens encrypted) -> TICKETS_ISSUED; SafeTix."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from pydantic import SecretStr

from fulfilment import state_machine, ticket_crypto
from fulfilment.db import session_scope
from fulfilment.flowkit.fencing import Next, failure, note_late, park, partner_request_id, record
from fulfilment.flowkit.flow import StepContext
from fulfilment.flowkit.tickets import Refreshed
from fulfilment.partners.base import TransientError
from fulfilment.partners.ticketmaster import assumed
from fulfilment.partners.ticketmaster.flow import data as tm_data
from fulfilment.partners.ticketmaster.flow.base import FlowBase
from fulfilment.partners.ticketmaster.payloads import (
    Device,
    Operation,
    OrderTickets,
    Polling,
    RenderTicket,
    delay_date_start,
)
from fulfilment.state_machine import StaleTransition, State
from models import Purchase, Ticket

log = logging.getLogger(__name__)


class Tickets(FlowBase):
    """AWAITING_TICKETS: fetch the order's tickets, store them sealed; TICKETS_ISSUED: refresh SafeTix tokens."""

    # ---- deliver: order management -----------------------------------------------------------------

    def deliver(self, purchase: Purchase, step: StepContext) -> Next | None:
        data = tm_data.TmData(purchase)
        stored = data["order_token"]
        if not stored:
            record(purchase, State.NEEDS_ATTENTION, "no order token to fetch the tickets with", step.message_id,
                   changes=failure("ORDER_TOKEN_UNKNOWN", f"order {purchase.order_id} exists but its token is "
                                   "unknown: get the tickets from Ticketmaster support"))
            return None
        token = ticket_crypto.decrypt(self.config.ticket_key, stored)
        try:
            pending = data["pending"]
            if pending is not None and pending["operation"] == str(Operation.ORDER_TICKETS):
                purchase, answer = self._poll(purchase, data, step, "order_tickets", lambda deadline: self.api.poll(
                    pending["url"], expect=Operation.ORDER_TICKETS,
                    request_id=partner_request_id(purchase, "poll-tickets"), deadline=deadline), ordered=True)
                data.without("pending")
            else:
                answer = self._call(purchase, data, step, "order_tickets", lambda deadline: self.api.order_tickets(
                    token, self.device_of(data.values), data["third_party_account_id"],
                    request_id=partner_request_id(purchase, "tickets"), deadline=deadline), ordered=True)
            if isinstance(answer, Polling):
                self._wait_for_poll(purchase, data, step, answer, self._clock(), operation=Operation.ORDER_TICKETS)
            assert isinstance(answer, OrderTickets)
            return self._tickets(purchase, data, step, answer)
        except tm_data._Stop as stop:
            return stop.following

    def _tickets(self, purchase: Purchase, data: tm_data.TmData, step: StepContext, answer: OrderTickets) -> Next | None:
        event = data["event"] or {}
        usable = [ticket for ticket in answer.tickets if not ticket.voided]
        retrievable_from = (delay_date_start(answer.delivery_delay_date, event.get("timezone"))
                            if answer.delivery_delay_date else None)
        # SafeTix tickets whose tokens TM does not give yet.  Every documented signal counts: a future
        # delivery delay date, `service_level` SAFETIX, a rotating-symbology entry without a token.
        # Tickets are never issued as final without their tokens.
        safetix = (answer.service_level or "").upper() == assumed.SAFETIX_SERVICE_LEVEL
        date_ahead = retrievable_from is not None and retrievable_from > self._clock()
        tokenless = [ticket for ticket in usable if not ticket.is_safetix and (safetix or date_ahead or (
            ticket.secure_entry is not None and ticket.secure_entry.render_type != assumed.BARCODE_RENDER_TYPE))]
        if tokenless:
            if date_ahead:
                assert retrievable_from is not None
                return self._delayed(purchase, data, step, answer, retrievable_from)
            park(purchase, next_action_in=tm_data.TOKENS_LATE_RETRY_SECONDS, message_id=step.message_id,
                 error=f"{len(tokenless)} SafeTix ticket(s) without a token yet (delay date "
                 f"{answer.delivery_delay_date or 'not given'}); asking again later", partner_data=data.values)
            return None
        others = sorted({t.order_number for t in usable if t.order_number and t.order_number != purchase.order_id})
        if others and purchase.order_id and not purchase.order_id.startswith(tm_data.TOKEN_REF_PREFIX):
            record(purchase, State.NEEDS_ATTENTION, "order management answered for another order", step.message_id,
                   changes=failure("ORDER_MISMATCH", f"the order token of order {purchase.order_id} gave the tickets "
                                   f"of order(s) {', '.join(others)}: check the token with Ticketmaster support"))
            return None
        if not usable:
            record(purchase, State.NEEDS_ATTENTION, "order management listed no usable ticket", step.message_id,
                   changes=failure("NO_TICKETS", f"order {purchase.order_id}: {len(answer.tickets)} ticket(s), "
                                   "all voided or none"))
            return None
        start = tm_data._parse(event.get("start"))
        key = self.config.ticket_key
        rows = []
        for position, ticket in enumerate(usable):
            secure = ticket.secure_entry
            token = secure.token if secure is not None else None
            rows.append(Ticket(
                purchase_id=purchase.id, position=position, barcode=ticket.barcode, section=ticket.section,
                row=ticket.row, seat=ticket.seat, render_type=secure.render_type if secure else None,
                token_encrypted=ticket_crypto.encrypt(key, token) if token is not None else None,
                voided=False, event_start=start,
                refresh_due_at=(start - tm_data.REFRESH_BEFORE_START) if (start and token is not None) else None,
            ))
        # The tokens go to the requester in the event, sealed while the event waits in the outbox.
        issued = [ticket_crypto.seal_ticket(key, {
            "barcode": ticket.barcode, "section": ticket.section, "row": ticket.row, "seat": ticket.seat,
            "render_type": ticket.secure_entry.render_type if ticket.secure_entry else None,
        }, ticket.secure_entry.token if ticket.secure_entry else None) for ticket in usable]
        try:
            with session_scope() as session:
                current = session.get_one(Purchase, purchase.id, with_for_update=True)
                if current.claim_token != purchase.claim_token or current.state != State.AWAITING_TICKETS:
                    raise StaleTransition(purchase.id, State.AWAITING_TICKETS)
                session.add_all(rows)
                state_machine.transition(
                    session, current, State.TICKETS_ISSUED, message_id=step.message_id,
                    reason=f"{len(rows)} ticket(s) issued for order {purchase.order_id}" + (
                        "" if start is not None else "; the event's start is unknown (no event_start in the request, "
                        "event details unavailable): no SafeTix refresh is scheduled, refresh on demand"),
                    changes={"order_status": "tickets_issued", "partner_data": data.without("pending"),
                             "last_error": None},
                    event_extra={"tickets": issued, "delivery": {
                        "service_level": answer.service_level, "delivery_delay_date":
                        answer.delivery_delay_date.isoformat() if answer.delivery_delay_date else None}},
                )
        except StaleTransition:
            note_late(purchase, f"{len(rows)} ticket(s) fetched, not recorded by this worker", step.message_id)
        return None

    def _delayed(self, purchase: Purchase, data: tm_data.TmData, step: StepContext, answer: OrderTickets,
                 retrievable_from: dt.datetime) -> Next | None:
        assert answer.delivery_delay_date is not None
        day = answer.delivery_delay_date.isoformat()
        wait = max((retrievable_from - self._clock()).total_seconds(), 1.0)
        if data["delay_notified"] != day:
            with session_scope() as session:
                current = session.get_one(Purchase, purchase.id, with_for_update=True)
                if current.claim_token == purchase.claim_token:
                    state_machine.note(
                        session, current, kind="tickets_delayed", event_type="purchase.tickets_delayed",
                        reason=f"Ticketmaster delivers the tickets of order {purchase.order_id} from {day} "
                        "(event-local date)", message_id=step.message_id,
                        extra={"tickets_delay": {"delivery_delay_date": day,
                                                 "retrievable_from": tm_data._iso(retrievable_from)}})
            data.set(delay_notified=day, delay_date=day)
        park(purchase, next_action_in=wait, error=None, message_id=step.message_id, partner_data=data.values)
        return None

    # ---- SafeTix refresh (steps/refresh.py) ---------------------------------------------------------

    def refresh(self, purchase: Purchase, tickets: Sequence[Ticket], *, key: SecretStr,
                deadline: float, device: dict[str, Any] | None = None) -> list[Refreshed]:
        """New tokens for the tickets from securerender, `x-user-id` = the buyer's
        third_party_account_id (the one sent with the payment), with the fan's device (`device`, given
        on demand, else the request's).  A ticket without a barcode (seed 003's example has
        `barcode_id: ""`) is refreshed through order management instead, matched by its seat.
        Tokens are matched to tickets by barcode; by position only for a single ticket.  Transient
        failures raise."""
        data = tm_data.TmData(purchase)
        user = data["third_party_account_id"]
        fan = self.device_of(data.values, device)
        wanted: list[tuple[Ticket, RenderTicket]] = []
        results: list[Refreshed] = []
        barcodeless = [ticket for ticket in tickets if not ticket.barcode]
        if barcodeless:
            results += self._refresh_by_order(purchase, data, barcodeless, fan, deadline)
        for ticket in tickets:
            if not ticket.barcode:
                continue
            if not (ticket.section and ticket.row and ticket.seat):
                results.append(Refreshed(ticket.id, None, "ticket lacks section, row or seat"))
                continue
            wanted.append((ticket, RenderTicket(event_id=purchase.event_id, section=ticket.section, row=ticket.row,
                                                seat=ticket.seat, barcode=ticket.barcode)))
        if not wanted:
            return results
        answer = self.api.secure_render(user, fan, [render for _, render in wanted],
                                        request_id=partner_request_id(purchase, "securerender"), deadline=deadline)
        by_barcode = {rendered.barcode: rendered for rendered in answer.tickets if rendered.barcode}
        for ticket, render in wanted:
            rendered = by_barcode.get(render.barcode) or (
                answer.tickets[0] if len(wanted) == 1 and len(answer.tickets) == 1 else None)
            if rendered is None:
                results.append(Refreshed(ticket.id, None, "securerender did not answer for this ticket"))
            elif rendered.error is not None or rendered.token is None:
                error = rendered.error
                results.append(Refreshed(ticket.id, None, f"{error.code}: {error.message}" if error else "no token"))
            else:
                results.append(Refreshed(ticket.id, rendered.token.get_secret_value()))
        return results

    def _refresh_by_order(self, purchase: Purchase, data: tm_data.TmData, tickets: Sequence[Ticket], fan: Device,
                          deadline: float) -> list[Refreshed]:
        """Fresh tokens from order management for tickets securerender cannot name (no barcode)."""
        stored = data["order_token"]
        if not stored:
            return [Refreshed(ticket.id, None, "no barcode, and no order token to ask order management with")
                    for ticket in tickets]
        answer = self.api.order_tickets(ticket_crypto.decrypt(self.config.ticket_key, stored), fan,
                                        data["third_party_account_id"],
                                        request_id=partner_request_id(purchase, "refresh-tickets"), deadline=deadline)
        if isinstance(answer, Polling):
            raise TransientError("POLLING", "order management answered 202: refreshed on the next run")
        usable = [found for found in answer.tickets if not found.voided and found.is_safetix]
        results = []
        for ticket in tickets:
            same_seat = [found for found in usable if (found.section, found.row, found.seat) == (
                ticket.section, ticket.row, ticket.seat) and ticket.seat is not None]
            if len(same_seat) != 1 and len(tickets) == 1 and len(usable) == 1:
                same_seat = usable
            if len(same_seat) != 1 or same_seat[0].secure_entry is None or same_seat[0].secure_entry.token is None:
                results.append(Refreshed(ticket.id, None, "order management gave no token for this seat"))
            else:
                results.append(Refreshed(ticket.id, same_seat[0].secure_entry.token.get_secret_value()))
        return results
