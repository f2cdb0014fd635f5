"""Record an order a person found at the partner (`fulfil resolve`, the console's resolve form):
fetched from TBB first, or recorded with the order token Ticketmaster support gave."""

from __future__ import annotations

import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from fulfilment import state_machine
from fulfilment.db import session_scope
from fulfilment.flowkit.fencing import partner_request_id
from fulfilment.partners.base import NotFound, Order, Partner, PartnerError, PermanentError
from fulfilment.partners.tbb.flow import order_columns
from fulfilment.settings import PolicySettings
from fulfilment.state_machine import State
from models import OrphanOrder, PartnerQuote, Purchase

if TYPE_CHECKING:
    pass

from fulfilment.operator.actions import (
    ORDER_ID_PATTERN,
    ORDER_PATH,
    RESOLVABLE,
    Done,
    NothingToDo,
    OrderNotFound,
    PartnerUnreachable,
    PurchaseNotFound,
    Refused,
    _locked,
    find_purchase,
)


def resolve(
    ident: str, *, order_id: str, operator: str, partner: Partner, settings: PolicySettings, note: str | None = None
) -> Done:
    """Record an order a person found at the partner: fetched first, then AWAITING_TRANSFER.

    Refused unless the purchase waits for an order nobody could confirm and the order was
    made from one of its quotes.  The partner is asked outside any transaction; the state is
    checked again, under lock, before anything is written.
    """
    order_id = order_id.strip()
    if not ORDER_ID_PATTERN.match(order_id):
        raise ValueError(f"{order_id!r} is not a partner order id (letters, digits, . _ : -, at most 100)")
    with session_scope() as session:
        purchase = find_purchase(session, ident)
        if purchase is None:
            raise PurchaseNotFound(f"no purchase with id or request_id {ident!r}")
        _check_resolvable(session, purchase, order_id)
        quotes = {q.quote_id: q for q in session.scalars(select(PartnerQuote).where(PartnerQuote.purchase_id == purchase.id))}
        request_id = partner_request_id(purchase, f"operator-resolve:{order_id}")
    try:
        order = partner.get_order(order_id, request_id=request_id, deadline=time.monotonic() + settings.step_deadline_seconds)
    except NotFound as error:
        raise OrderNotFound(f"the partner has no order {order_id} ({error.code})") from None
    except PermanentError as error:
        raise OrderNotFound(f"the partner refused to show order {order_id}: {error}") from None
    except PartnerError as error:
        raise PartnerUnreachable(error) from None
    if order.quote_id not in quotes and order.quote_id != purchase.quote_id:
        known = ", ".join(sorted({*quotes, *([purchase.quote_id] if purchase.quote_id else [])})) or "none"
        raise Refused(f"order {order_id} was made from quote {order.quote_id}, which is not one of purchase "
                      f"{purchase.id}'s quotes ({known}): it is not this purchase's order")

    with session_scope() as session:
        current = session.get(Purchase, purchase.id, with_for_update=True, populate_existing=True)
        assert current is not None  # purchases are never deleted
        _check_resolvable(session, current, order_id)  # it may have moved while the partner was asked
        state = State(current.state)
        history = (f"order {order.order_id} (quote {order.quote_id}, {order.status}) found at the partner and "
                   f"recorded by operator {operator}" + (f": {' '.join(note.split())}" if note and note.strip() else ""))
        state_machine.transition(
            session, current, State.AWAITING_TRANSFER, reason=history,
            next_action_in=settings.transfer_poll_min_seconds,
            changes={**order_columns(current, order), **_quote_columns(current, order, quotes.get(order.quote_id)),
                     "stalled_from": None},
        )
        _orphans_resolved(session, order.order_id, current.id, operator)
        return Done(current.id, state, State.AWAITING_TRANSFER, history)


TM_ORDER_NUMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$")  # e.g. 35-49135/LA1 (TM's own shape)
TOKEN_PATTERN = re.compile(r"^[\x21-\x7e]{1,4096}$")  # printable, no spaces: what an order token can be


def resolve_with_token(ident: str, *, order_id: str, order_token: SecretStr, operator: str, ticket_key: SecretStr,
                       note: str | None = None, via: str | None = "fulfil resolve") -> Done:
    """Ticketmaster: record an order a person found through support, with its order token (TM has no
    "get order" call by number; the token is what order management needs).  The token is sealed
    with the ticket key before it is stored; the purchase then awaits its tickets, which the
    tickets step fetches (order management checks the token: a wrong one holds it again).

    For a TM purchase whose order outcome is unknown (needs_attention, order_unknown, stalled on the
    order path), including one whose order number is known without its token (ORDER_TOKEN_UNKNOWN).
    """
    from fulfilment import ticket_crypto

    order_id = order_id.strip()
    if not TM_ORDER_NUMBER.match(order_id):
        raise ValueError(f"{order_id!r} is not a Ticketmaster order number (letters, digits, . _ : - /, at most 100)")
    if not TOKEN_PATTERN.match(order_token.get_secret_value().strip()):
        raise ValueError("the order token must be 1 to 4096 printable characters without spaces")
    sealed = ticket_crypto.encrypt(ticket_key, SecretStr(order_token.get_secret_value().strip()))
    with session_scope() as session:
        current = _locked(session, ident)
        pid, state = current.id, State(current.state)
        if current.partner != "ticketmaster":
            raise Refused(f"purchase {pid} is a {current.partner} purchase: record its order with --order-id alone")
        if current.order_id not in (None, order_id):
            raise Refused(f"purchase {pid} already has order {current.order_id} (it is {state}); {order_id} is not "
                          "recorded")
        if (current.partner_data or {}).get("order_token") and current.order_id == order_id:
            raise NothingToDo(f"purchase {pid} already has order {order_id} with its token (it is {state})")
        stalled_on_order_path = state is State.STALLED and current.stalled_from in (*ORDER_PATH, State.AWAITING_TICKETS)
        if state not in RESOLVABLE and not stalled_on_order_path:
            raise Refused(f"purchase {pid} is {state}: only a purchase whose order (or its token) is unknown "
                          "(needs_attention, order_unknown, or stalled while ordering) can have an order recorded")
        owner = session.scalar(select(Purchase.id).where(Purchase.order_id == order_id, Purchase.id != pid))
        if owner is not None:
            raise Refused(f"order {order_id} is already recorded for purchase {owner}")
        data = {key: value for key, value in (current.partner_data or {}).items() if key not in ("pending", "cart")}
        history = (f"Ticketmaster order {order_id} found through support and recorded with its token by operator "
                   f"{operator}" + (f" ({via})" if via else "") + (f": {' '.join(note.split())}" if note and note.strip() else ""))
        state_machine.transition(
            session, current, State.AWAITING_TICKETS, reason=history, next_action_in=0.0,
            changes={"order_id": order_id, "order_status": "recorded by operator",
                     "partner_data": {**data, "order_token": sealed}, "order_evidence": "exists",
                     "failure_code": None, "failure_message": None, "last_error": None, "stalled_from": None},
        )
        _orphans_resolved(session, order_id, pid, operator)
        return Done(pid, state, State.AWAITING_TICKETS, history)


def _orphans_resolved(session: Session, order_id: str, purchase_id: uuid.UUID, operator: str) -> None:
    """An orphan order recorded as a purchase's own is resolved with it."""
    session.execute(
        update(OrphanOrder)
        .where(OrphanOrder.order_id == order_id, OrphanOrder.resolved_at.is_(None))
        .values(resolved_at=func.now(), resolution=f"recorded as the order of purchase {purchase_id} by operator "
                f"{operator}")
    )


def _check_resolvable(session: Session, purchase: Purchase, order_id: str) -> None:
    pid, state = purchase.id, State(purchase.state)
    if purchase.order_id == order_id:
        raise NothingToDo(f"purchase {pid} already has order {order_id} (it is {state})")
    if purchase.order_id:
        raise Refused(f"purchase {pid} already has order {purchase.order_id} (it is {state}); {order_id} is not "
                      "recorded")
    stalled_on_order_path = state is State.STALLED and purchase.stalled_from in ORDER_PATH
    if state not in RESOLVABLE and not stalled_on_order_path:
        raise Refused(f"purchase {pid} is {state}"
                      + (f" (stalled while {purchase.stalled_from})" if state is State.STALLED else "")
                      + ": only a purchase whose order outcome is unknown (needs_attention, order_unknown, or stalled "
                        "while ordering) can have an order recorded")
    owner = session.scalar(select(Purchase.id).where(Purchase.order_id == order_id))
    if owner is not None:
        raise Refused(f"order {order_id} is already recorded for purchase {owner}")


def _quote_columns(purchase: Purchase, order: Order, quote: PartnerQuote | None) -> dict[str, Any]:
    """The order was made from an earlier quote of the purchase: that quote becomes its current one."""
    if quote is None or quote.quote_id == purchase.quote_id:
        return {}
    return {
        "quote_id": quote.quote_id,
        "quote_expires_at": quote.expires_at,
        "unit_price": order.unit_price if order.unit_price is not None else quote.unit_price,
        "subtotal": order.subtotal if order.subtotal is not None else quote.subtotal,
    }
