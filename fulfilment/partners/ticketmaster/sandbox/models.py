"""Cart and order records and their contract-shaped views (seed 003 / 2017 doc shapes).

Pricing: per ticket line, ``merchandise`` = face x qty, ``fee`` = (service + facility + distance) x qty,
``tax`` = (face tax + service tax) x qty; the cart adds one processing fee (seed 003's "processing"
item) and a free delivery item; ``grand`` = merchandise + fee + tax + delivery; ``unpaid`` = grand
until a payment is accepted, then 0.00. Seed 003's cart (one BALC2L seat) comes out as 101.66.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from fulfilment.partners.sandbox_kit.clock import epoch_ms, iso_z

from . import assumed
from .catalogue import Charges, Event, PriceLevel, RowSpec, TicketType
from .inventory import RowKey
from .responses import money

ZERO = Decimal("0.00")

CART_STATES = ("held", "paid", "committed", "deleted", "expired")
LIVE_STATES = ("held", "paid")


@dataclass(frozen=True)
class CartLine:
    ticket_type: TicketType
    quantity: int
    charges: Charges

    @property
    def merchandise(self) -> Decimal:
        return money(self.charges.face * self.quantity)

    @property
    def fee(self) -> Decimal:
        c = self.charges
        return money((c.service + c.facility + c.distance) * self.quantity)

    @property
    def tax(self) -> Decimal:
        return money((self.charges.face_tax + self.charges.service_tax) * self.quantity)

    def view(self) -> dict[str, Any]:
        c, q = self.charges, self.quantity
        return {
            "description": self.ticket_type.description,
            "id": self.ticket_type.id,
            "quantity": q,
            "inventory_type": "PRIMARY",
            "charges": [
                {"price": money(c.distance), "type": "distance", "quantity": q, "tax": ZERO},
                {"price": money(c.facility), "type": "facility", "quantity": q, "tax": ZERO},
                {"price": money(c.face), "type": "face_value", "quantity": q, "tax": money(c.face_tax)},
                {"price": money(c.service), "type": "service", "quantity": q, "tax": money(c.service_tax)},
            ],
        }


@dataclass
class Payment:
    type: str
    first_name: str
    last_name: str
    email_address: str
    amount: Decimal
    currency: str
    third_party_account_id: str
    expire_month: int
    expire_year: int

    def view(self) -> dict[str, Any]:
        return {"id": 1, "payment_id": "1", "type": "CC", "amount": self.amount,
                "card": {"expire_month": self.expire_month, "expire_year": self.expire_year, "issuer": "VISA",
                         "number": "*" * 18 + "1111"}}


def _totals(currency: str, fee: Decimal, merchandise: Decimal, tax: Decimal) -> dict[str, Any]:
    return {"currency_code": currency, "fee": money(fee), "grand": money(fee + merchandise + tax),
            "merchandise": money(merchandise), "tax": money(tax)}


@dataclass
class Cart:
    cart_id: str
    apikey: str
    event: Event
    level: PriceLevel
    row: RowSpec
    seats: list[str]
    lines: list[CartLine]
    created_at: datetime
    hold_until: datetime
    state: str = "held"
    payment: Payment | None = None
    order_number: str | None = None
    ended_at: datetime | None = None

    @property
    def key(self) -> RowKey:
        return (self.event.id, self.row.section, self.row.row)

    @property
    def ticket_fee(self) -> Decimal:
        return sum((line.fee for line in self.lines), ZERO)

    @property
    def merchandise(self) -> Decimal:
        return sum((line.merchandise for line in self.lines), ZERO)

    @property
    def tax(self) -> Decimal:
        return sum((line.tax for line in self.lines), ZERO)

    @property
    def grand(self) -> Decimal:
        return money(self.merchandise + self.ticket_fee + self.event.processing_fee + self.tax)

    def hold_seconds(self, now: datetime) -> int:
        if self.state not in LIVE_STATES:
            return 0
        return max(0, math.floor((self.hold_until - now).total_seconds()))

    def view(self, now: datetime) -> dict[str, Any]:
        currency = self.event.currency
        ticket_item = {
            "type": "ticket",
            "id": 1,
            "areas": [{"description": area.description, "id": area.id}
                      for area_id in self.row.area_ids if (area := self.event.area(area_id)) is not None],
            "tickets": [line.view() for line in self.lines],
            "ga": False,
            "totals": _totals(currency, self.ticket_fee, self.merchandise, self.tax),
            "event_id": self.event.id,
            "num_seats": len(self.seats),
            "row": self.row.row,
            "section": self.row.section,
            "start_seat_number": self.seats[0],
            "end_seat_number": self.seats[-1],
            "is_ga": False,
        }
        processing = {"type": "processing", "id": 2, "totals": _totals(currency, self.event.processing_fee, ZERO, ZERO)}
        delivery = {"type": "delivery", "id": 4, "totals": _totals(currency, ZERO, ZERO, ZERO),
                    "carrier": "TICKETMASTER", "service_level": "ETICKET",
                    "description": {"long": "Get in with:", "short": "eTickets", "eta": "eTickets"},
                    "requires_address": False}
        paid = self.payment is not None
        totals = {"currency_code": currency, "delivery": ZERO, "fee": money(self.ticket_fee + self.event.processing_fee),
                  "grand": self.grand, "merchandise": money(self.merchandise), "tax": money(self.tax),
                  "unpaid": ZERO if paid else self.grand, "upsell": ZERO}
        cart: dict[str, Any] = {"items": [ticket_item, processing, delivery], "totals": totals,
                                "payments": [self.payment.view()] if self.payment else [],
                                "hold_time": self.hold_seconds(now)}
        return {"cart_id": self.cart_id, "cart": cart}

    def admin_view(self, now: datetime) -> dict[str, Any]:
        return {
            "cart_id": self.cart_id, "state": self.state, "event_id": self.event.id, "section": self.row.section,
            "row": self.row.row, "seats": list(self.seats), "grand": self.grand, "currency": self.event.currency,
            "created_at": iso_z(self.created_at), "hold_until": iso_z(self.hold_until),
            "hold_time": self.hold_seconds(now), "paid": self.payment is not None,
            "third_party_account_id": self.payment.third_party_account_id if self.payment else None,
            "order_number": self.order_number, "ended_at": iso_z(self.ended_at) if self.ended_at else None,
        }


@dataclass
class Ticket:
    barcode: str
    seat_id: str
    section: str
    row: str
    seat_name: str
    portal: str
    ticket_type: TicketType
    charges: Charges
    voided: bool = False


@dataclass
class Order:
    order_number: str
    order_token: str
    cart_id: str
    apikey: str
    event: Event
    source_account_id: str | None
    third_party_account_id: str
    customer_email: str
    created_at: datetime
    tickets: list[Ticket]
    grand_total: Decimal
    redeemed: bool = False
    unredeemed_hidden: bool = False  # never in the unredeemed list (unredeemed_hide_rate)
    management_calls: list[datetime] = field(default_factory=list)

    def commit_view(self) -> dict[str, Any]:
        return {
            "order_number": self.order_number,
            "order_token": self.order_token,
            "grand_total": self.grand_total,
            "currency_code": self.event.currency,
            "redemption_url": assumed.REDEMPTION_URL.format(token=self.order_token),
            "tm_app_url": assumed.TM_APP_URL.format(token=self.order_token),
        }

    def unredeemed_view(self) -> dict[str, Any]:
        return {
            "purchase_date_time": epoch_ms(self.created_at),
            "email_status": assumed.UNREDEEMED_EMAIL_STATUS,
            "event_date_time": epoch_ms(self.event.start),
            "event_id": self.event.id,
            "order_source_account_id": self.source_account_id,
            "purchase_email_address": self.customer_email,
        }

    def admin_view(self) -> dict[str, Any]:
        return {
            "order_number": self.order_number, "order_token": self.order_token, "cart_id": self.cart_id,
            "event_id": self.event.id, "source_account_id": self.source_account_id,
            "third_party_account_id": self.third_party_account_id, "customer_email": self.customer_email,
            "created_at": iso_z(self.created_at), "grand_total": self.grand_total, "currency": self.event.currency,
            "redeemed": self.redeemed, "unredeemed_hidden": self.unredeemed_hidden, "management_calls": len(self.management_calls),
            "tickets": [{"barcode": t.barcode, "section": t.section, "row": t.row, "seat": t.seat_name,
                         "voided": t.voided} for t in self.tickets],
        }
