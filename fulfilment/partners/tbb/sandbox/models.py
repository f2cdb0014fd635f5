"""In-memory records and their public (contract-shaped) and admin views.

Public views follow the seeds exactly: quote = seed 002 ``data``, order = seed 001 ``data``.
Admin views add the bookkeeping a test needs (owner, consumption, the quote's expiry next to the
order's creation instant).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fulfilment.partners.sandbox_kit.clock import iso_z

from .catalogue import Event
from .inventory import seat_range


def _money(value: float) -> float:
    return round(value, 2)


@dataclass
class Token:
    access_token: str
    client_id: str
    issued_at: datetime
    expires_at: datetime


@dataclass
class Quote:
    quote_id: str
    client_id: str
    event_id: str
    section_name: str
    row_name: str
    quantity: int
    unit_price: float
    created_at: datetime
    expires_at: datetime
    consumed_by_order_id: str | None = None
    consumed_at: datetime | None = None

    def public(self, event: Event) -> dict[str, Any]:
        return {
            "quote_id": self.quote_id,
            # Seed 002: "Always active on creation". The real API's later wording is unknown,
            # so the public view keeps "active"; consumption/expiry are visible in the admin view.
            "status": "active",
            "expires_at": iso_z(self.expires_at),
            "event": event.summary(),
            "seats": {
                "section_name": self.section_name,
                "section_name_display": f"Section {self.section_name}",
                "row_name": self.row_name,
                "row_name_display": f"Row {self.row_name}",
                "quantity": self.quantity,
            },
            "pricing": {
                "unit_price": _money(self.unit_price),
                "subtotal": _money(self.unit_price * self.quantity),
                "currency": "USD",
            },
        }

    def admin(self, event: Event, now: datetime) -> dict[str, Any]:
        view = self.public(event)
        view.update(
            {
                "partner": self.client_id,
                "created_at": iso_z(self.created_at),
                "consumed": self.consumed_by_order_id is not None,
                "consumed_by_order_id": self.consumed_by_order_id,
                "consumed_at": iso_z(self.consumed_at) if self.consumed_at else None,
                "expired": now >= self.expires_at,
            }
        )
        return view


@dataclass
class Order:
    order_id: str
    client_id: str
    quote_id: str
    event_id: str
    section_name: str
    row_name: str
    quantity: int
    first_seat: int
    last_seat: int
    unit_price: float
    delivery_type: str
    delivery_deadline: datetime
    transfer_email: str
    status: str
    created_at: datetime
    updated_at: datetime
    # Copied from the quote at creation so "no order on an expired quote" can be audited.
    quote_expires_at: datetime
    status_forced: bool = False

    def public(self, event: Event) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "status": self.status,
            "quote_id": self.quote_id,
            "event": event.summary(),
            "seats": {
                "section_name_display": f"Section {self.section_name}",
                "row_name_display": f"Row {self.row_name}",
                "quantity": self.quantity,
                "seat_range": seat_range(self.first_seat, self.last_seat),
            },
            "pricing": {
                "unit_price": _money(self.unit_price),
                "subtotal": _money(self.unit_price * self.quantity),
            },
            "delivery": {
                "delivery_type": self.delivery_type,
                "delivery_deadline": iso_z(self.delivery_deadline),
                "transfer_email": self.transfer_email,
            },
            "created_at": iso_z(self.created_at),
            "updated_at": iso_z(self.updated_at),
        }

    @property
    def created_on_expired_quote(self) -> bool:
        return self.created_at >= self.quote_expires_at

    def admin(self, event: Event) -> dict[str, Any]:
        view = self.public(event)
        view.update(
            {
                "partner": self.client_id,
                "section_name": self.section_name,
                "row_name": self.row_name,
                "quote_expires_at": iso_z(self.quote_expires_at),
                "created_on_expired_quote": self.created_on_expired_quote,
                "status_forced": self.status_forced,
            }
        )
        return view
