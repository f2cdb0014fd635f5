"""What Ticketmaster's flow keeps and computes: its settings (TmConfig), what partner_data holds (TmData),
time (niterun, the event's zone), seats, source_account_id, and a polling URL that came late."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import SecretStr

from fulfilment import state_machine
from fulfilment.db import session_scope
from fulfilment.flowkit.fencing import (
    Next,
)
from fulfilment.flowkit.orders import (
    STILL_RESOLVING,
)
from fulfilment.partners.base import PartnerError
from fulfilment.partners.ticketmaster.errors import (
    CartInvalid,
)
from fulfilment.partners.ticketmaster.payloads import (
    Address,
    Cart,
    Device,
)
from fulfilment.partners.ticketmaster.payment import (
    NonceSource,
    nonce_source,
)
from fulfilment.settings import Settings
from fulfilment.state_machine import State
from models import Purchase

log = logging.getLogger(__name__)


NAME = "ticketmaster"

EVENT_CACHE_SECONDS = 600.0
# Niterun ends at this event-local hour (contract: 00:00-02:00); a purchase parked for it wakes then.
NITERUN_END_HOUR = 2
# When TM gave no Ratelimit-Expiry: how long a parked purchase waits.
QUOTA_FALLBACK_SECONDS = 60.0
# A SafeTix ticket is refreshed this long before its event starts (seed 003).
REFRESH_BEFORE_START = dt.timedelta(hours=20)
CENT = Decimal("0.01")
# The unredeemed list's window is N days: a commit this close to its edge may already be out of it.
LIST_WINDOW_MARGIN = dt.timedelta(hours=1)
# SafeTix tokens still missing after the delivery delay date (or without one): ask again this often.
TOKENS_LATE_RETRY_SECONDS = 300.0


def source_account_id(purchase_id: object) -> str:
    """What the commit sends as `source_account_id` and the unredeemed-orders list gives back: a
    stable hash of the purchase id (no customer data, the same on every attempt)."""
    return hashlib.sha256(f"ticket-fulfilment:{purchase_id}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class TmConfig:
    """What the flow needs besides the client: the operator's billing identity and payment method,
    this installation's device, the ticket key."""

    device: Device
    first_name: str
    last_name: str
    email: str
    phone: str
    payment_type: str
    nonces: NonceSource
    payment_cin: SecretStr | None
    address: Address | None
    ticket_key: SecretStr
    min_hold_seconds: float
    unredeemed_days: int
    unavailable_retry_seconds: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> TmConfig:
        def need(value: Any, name: str) -> Any:
            if value is None:
                raise ValueError(f"{name.upper()} is required when TM_ENABLED is set")
            return value

        address = None
        if settings.tm_billing_address_line1 and settings.tm_billing_city and settings.tm_billing_region \
                and settings.tm_billing_postal_code:
            address = Address(line1=settings.tm_billing_address_line1, line2="", city=settings.tm_billing_city,
                              region_abbrev=settings.tm_billing_region, postal_code=settings.tm_billing_postal_code,
                              country_code=settings.tm_billing_country_code, country_id=settings.tm_billing_country_id)
        return cls(
            device=Device(device_id=need(settings.tm_device_id, "tm_device_id"), device_type="web", device_os="other"),
            first_name=need(settings.tm_billing_first_name, "tm_billing_first_name"),
            last_name=need(settings.tm_billing_last_name, "tm_billing_last_name"),
            email=need(settings.tm_billing_email, "tm_billing_email"),
            phone=need(settings.tm_billing_phone, "tm_billing_phone"),
            payment_type=settings.tm_payment_type,
            nonces=nonce_source(settings),
            payment_cin=settings.tm_payment_cin,
            address=address,
            ticket_key=need(settings.ticket_key, "ticket_key"),
            min_hold_seconds=settings.tm_min_hold_seconds,
            unredeemed_days=settings.tm_unredeemed_days,
            unavailable_retry_seconds=settings.tm_unavailable_retry_seconds,
        )


class TmData:
    """partner_data of a TM purchase (a JSON object), read and written by this flow only.

    delivery, ticket_type_id, price_level_id, third_party_account_id, event_start, event_timezone,
    device (the fan's, or None): from the request
    payment_nonce: the request's nonce, sealed (ticket_crypto); removed once a payment used it, and
    payment_nonce_used set instead (payment.py)
    event: {"start": ISO or None, "timezone": name or None, "source"}: from the request, else event details
    cart: {"id", "reserved_at" (ISO: when the reserve was sent), "hold_seconds", "expires_at" (the last
    answer's call sent + its hold_time), "paid", "grand", "currency", "seats"}
    pending: {"operation", "url" (never with the apikey), "not_before" (ISO), "sent_at" (ISO)}: dropped
    only on a definite answer or a gone URL (404/410)
    commit_sent_at: when the commit was sent (whether the unredeemed list can still show its order)
    abandoned: [cart ids still to delete]
    order_token: the commit's order token, encrypted (ticket_crypto)
    delay_date / delay_notified: the SafeTix delivery delay date, and whether the buyer was told
    """

    def __init__(self, purchase: Purchase) -> None:
        self.values: dict[str, Any] = dict(purchase.partner_data or {})

    def __getitem__(self, key: str) -> Any:
        return self.values.get(key)

    def set(self, **changes: Any) -> dict[str, Any]:
        self.values.update(changes)
        return self.values

    def without(self, *keys: str) -> dict[str, Any]:
        for key in keys:
            self.values.pop(key, None)
        return self.values


class _Stop(Exception):
    """The step ended (recorded, parked or released): return `following` from the flow."""

    def __init__(self, following: Next | None = None) -> None:
        super().__init__("step ended")
        self.following = following


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat()


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _parse(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def niterun_end(now: dt.datetime, timezone: str | None) -> dt.datetime | None:
    """The next 02:00 in the event's zone after `now` (None: zone unknown)."""
    try:
        zone = ZoneInfo(timezone) if timezone else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    if zone is None:
        return None
    local = now.astimezone(zone)
    end = local.replace(hour=NITERUN_END_HOUR, minute=0, second=0, microsecond=0)
    if end <= local:
        end += dt.timedelta(days=1)
    return end.astimezone(dt.UTC)


_PAYMENT_FIELD_WORDS = ("payment", "card", "cin", "nonce")


def names_payment_field(error: PartnerError) -> bool:
    """A refusal of add-payment that names a payment field (the operator's setup, not the cart)."""
    return not isinstance(error, CartInvalid) and any(word in error.message.lower() for word in _PAYMENT_FIELD_WORDS)


def _same(a: str | None, b: str | None) -> bool:
    return (a or "").strip().casefold() == (b or "").strip().casefold()


def seats_not_as_asked(cart: Cart, section: str | None, row: str | None) -> str:
    """What in the cart's ticket items is not the section/row the request named ("" when all is)."""
    if section is None:
        return ""
    wrong = [f"section {item.section or '?'} row {item.row or '?'}" for item in cart.items
             if item.type in (None, "ticket") and (item.section is not None or item.row is not None)
             and (not _same(item.section, section) or (row is not None and not _same(item.row, row)))]
    return ", ".join(wrong)


TOKEN_REF_PREFIX = "tm-token-"


def _token_ref(token: SecretStr | None) -> str:
    """An order id for a commit that gave a token but no order number: a hash, never the token."""
    digest = hashlib.sha256(token.get_secret_value().encode()).hexdigest()[:24] if token else "unknown"
    return f"{TOKEN_REF_PREFIX}{digest}"


def keep_late_polling(purchase: Purchase, pending: dict[str, Any], wait: float, message_id: str | None) -> None:
    """A commit's 202 that came after the claim had passed on: its polling URL (the only way to the
    order token) is never dropped.  It goes into the history in every case (the URL holds no
    secret), and back into partner_data if the purchase still waits for this cart's order; one held
    for a person or stalled is resolved again, so the URL is polled."""
    with session_scope() as session:
        current = session.get_one(Purchase, purchase.id, with_for_update=True)
        state = State(current.state)
        state_machine.late_answer(session, current.id, step="order", message_id=message_id,
                                  answer=f"commit of cart {purchase.quote_id} answered 202 late: polling URL "
                                  f"{pending['url']}")
        if state not in STILL_RESOLVING or current.order_id is not None or current.quote_id != purchase.quote_id:
            return
        kept = TmData(current)
        if kept["pending"] is None:
            kept.set(pending=pending)
        if state in (State.NEEDS_ATTENTION, State.STALLED):
            state_machine.transition(session, current, State.ORDER_UNKNOWN, message_id=message_id,
                                     reason=f"the commit of cart {purchase.quote_id} answered 202 late: polling it",
                                     next_action_in=wait, changes={"partner_data": kept.values,
                                                                   "failure_code": None, "failure_message": None})
        else:
            current.partner_data = kept.values
