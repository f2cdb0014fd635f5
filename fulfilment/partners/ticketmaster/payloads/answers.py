"""Ticketmaster's answers as typed values (frozen dataclasses; secrets as SecretStr, never in a repr)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import SecretStr

from fulfilment.partners.ticketmaster.payloads.reading import _zone

# ---- answers ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Area:
    id: str
    description: str | None
    group_label: str | None
    price_level_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PriceLevel:
    id: str
    description: str | None
    amounts: tuple[Decimal, ...]
    area_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TicketTypePrice:
    price_level_id: str
    amount: Decimal | None


@dataclass(frozen=True, slots=True)
class TicketType:
    id: str  # leading zeros kept
    description: str | None
    prices: tuple[TicketTypePrice, ...]
    area_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EventDetails:
    """GET /events/{event_id}.  `start_utc` / `start_date` / `timezone` are None when TM did not
    give them (format "date" means the time is TBA: only `start_date`)."""

    event_id: str
    name: str | None
    api_transactable: bool | None
    start_utc: dt.datetime | None
    start_date: dt.date | None
    timezone: str | None
    currency: str | None
    ticket_limit: int | None
    areas: tuple[Area, ...]
    price_levels: tuple[PriceLevel, ...]
    ticket_types: tuple[TicketType, ...]

    def zone(self) -> ZoneInfo | None:
        return _zone(self.timezone)

    @property
    def start_local(self) -> dt.datetime | None:
        zone = self.zone()
        return self.start_utc.astimezone(zone) if self.start_utc is not None and zone is not None else None


@dataclass(frozen=True, slots=True)
class OfferCharge:
    amount: Decimal
    reason: str | None
    type: str | None


@dataclass(frozen=True, slots=True)
class Offer:
    ticket_type_id: str  # leading zeros kept
    price_level_id: str | None
    name: str | None
    description: str | None
    face_value: Decimal | None
    currency: str | None
    charges: tuple[OfferCharge, ...]
    area_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class InventoryRow:
    section: str | None
    row: str | None
    seats: tuple[str, ...]
    places: tuple[str, ...]
    has_even_odd_mix: bool | None


@dataclass(frozen=True, slots=True)
class TicketAvailability:
    available: int | None
    total: int | None
    current_ticket_limit: int | None
    inventory: tuple[InventoryRow, ...]
    offers: tuple[Offer, ...]


@dataclass(frozen=True, slots=True)
class Availability:
    event_id: str | None
    restrict_single: bool | None
    event_ticket_limit: int | None
    tickets: tuple[TicketAvailability, ...]

    @property
    def offers(self) -> tuple[Offer, ...]:
        return tuple(offer for ticket in self.tickets for offer in ticket.offers)


@dataclass(frozen=True, slots=True)
class CartCharge:
    type: str | None
    price: Decimal
    quantity: int | None
    tax: Decimal | None


@dataclass(frozen=True, slots=True)
class CartTicket:
    ticket_type_id: str | None
    description: str | None
    quantity: int | None
    charges: tuple[CartCharge, ...]


@dataclass(frozen=True, slots=True)
class CartTotals:
    currency: str | None
    grand: Decimal
    fee: Decimal | None = None
    merchandise: Decimal | None = None
    delivery: Decimal | None = None
    tax: Decimal | None = None
    unpaid: Decimal | None = None
    upsell: Decimal | None = None


@dataclass(frozen=True, slots=True)
class CartItem:
    type: str | None  # "ticket", "processing", "delivery"; absent in the 2017 doc
    event_id: str | None
    section: str | None
    row: str | None
    start_seat: str | None
    end_seat: str | None
    num_seats: int | None
    tickets: tuple[CartTicket, ...]
    totals: CartTotals | None


@dataclass(frozen=True, slots=True)
class CartPayment:
    id: str | None
    type: str | None
    amount: Decimal | None


@dataclass(frozen=True, slots=True)
class Cart:
    """A reserved cart.  `hold_time_seconds` is how long TM holds it from its answer (it "may
    increase" through the cart process); None if the answer did not say."""

    cart_id: str
    hold_time_seconds: int | None
    items: tuple[CartItem, ...]
    totals: CartTotals
    currency: str
    payments: tuple[CartPayment, ...] = ()

    @property
    def num_seats(self) -> int:
        return sum(item.num_seats or 0 for item in self.items)


@dataclass(frozen=True, slots=True)
class Committed:
    """A commit's 200: the order exists.  At least one of `order_number` / `order_token` is set;
    fields TM sent but we could not read are named in `unreadable` (evidence is never dropped)."""

    cart_id: str | None
    order_number: str | None
    order_token: SecretStr | None = field(repr=False)
    grand_total: Decimal | None
    currency: str | None
    redemption_url: SecretStr | None = field(default=None, repr=False)  # embeds the order token
    tm_app_url: SecretStr | None = field(default=None, repr=False)
    unreadable: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CartDeleted:
    cart_id: str | None


@dataclass(frozen=True, slots=True)
class TicketError:
    code: int | None
    message: str


@dataclass(frozen=True, slots=True)
class SecureEntry:
    token: SecretStr | None = field(repr=False)
    render_type: str | None  # "rotating_symbology" | "barcode"
    segment_type: str | None
    error: TicketError | None


@dataclass(frozen=True, slots=True)
class OrderTicket:
    order_number: str | None
    event_id: str | None
    barcode: str | None  # None: the event emits no barcodes
    section: str | None
    row: str | None
    seat: str | None
    seat_id: str | None
    voided: bool | None
    secure_entry: SecureEntry | None

    @property
    def is_safetix(self) -> bool:
        """A token means SafeTix (render with the Secure Entry SDK); a barcode alone means a QR code."""
        return self.secure_entry is not None and self.secure_entry.token is not None


@dataclass(frozen=True, slots=True)
class OrderTickets:
    """POST /orders?order_token=...: the order's tickets and the initial SafeTix tokens.

    `delivery_delay_date` is when tokens become retrievable: a calendar date with no zone (see
    `delay_date_start`); the buyer must be told."""

    customer_email: str | None = field(repr=False)
    service_level: str | None
    carrier: str | None
    voided: bool | None
    tickets: tuple[OrderTicket, ...]
    delivery_delay_date: dt.date | None
    third_party_account_id: str | None


@dataclass(frozen=True, slots=True)
class UnredeemedOrder:
    order_source_account_id: str | None  # the source_account_id we sent with the commit
    event_id: str | None
    purchased_at: dt.datetime | None
    event_at: dt.datetime | None
    email_status: int | None  # 1 sent, 2 bounced, 3 spam, 4 send error
    order_number: str | None
    purchase_email: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class RenderedTicket:
    """One securerender answer: a fresh `token` (same barcode), or a per-ticket `error`."""

    event_id: str | None
    section: str | None
    row: str | None
    seat: str | None
    barcode: str | None
    token: SecretStr | None = field(repr=False)
    render_type: str | None
    pass_data: Mapping[str, Any] | None = field(repr=False)
    error: TicketError | None


@dataclass(frozen=True, slots=True)
class SecureRenderResult:
    tickets: tuple[RenderedTicket, ...]
    nfc_capable_device: bool | None = None

    @property
    def errors(self) -> tuple[RenderedTicket, ...]:
        return tuple(ticket for ticket in self.tickets if ticket.error is not None)


__all__ = ["Area", "Availability", "Cart", "CartCharge", "CartDeleted", "CartItem", "CartPayment", "CartTicket",
    "CartTotals", "Committed", "EventDetails", "InventoryRow", "Offer", "OfferCharge", "OrderTicket", "OrderTickets",
    "PriceLevel", "RenderedTicket", "SecureEntry", "SecureRenderResult", "TicketAvailability", "TicketError",
    "TicketType", "TicketTypePrice", "UnredeemedOrder"]
