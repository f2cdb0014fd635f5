"""Requests to Ticketmaster: the operations (and polling), the values a request is built from, and their JSON bodies."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import SecretStr

from fulfilment.partners.ticketmaster import assumed

# ---- operations and polling -------------------------------------------------------------------


class Operation(enum.StrEnum):
    """The calls of the client; `Polling.operation` says which one a polling URL continues."""

    EVENT_DETAILS = "event_details"
    AVAILABILITY = "availability"
    RESERVE = "reserve"
    ADD_PAYMENT = "add_payment"
    COMMIT = "commit"
    DELETE_CART = "delete_cart"
    ORDER_TICKETS = "order_tickets"
    UNREDEEMED_ORDERS = "unredeemed_orders"
    SECURE_RENDER = "secure_render"


CART_OPERATIONS = frozenset({Operation.RESERVE, Operation.ADD_PAYMENT, Operation.COMMIT, Operation.DELETE_CART})


@dataclass(frozen=True, slots=True)
class Polling:
    """TM has not finished: GET `url` (with `TicketmasterApi.poll`) after `wait_seconds`.

    `url` never holds the apikey (it is stripped; `poll` adds it back when sending), so it can be
    stored (Postgres) and survive restarts.  It may hold the cart id.
    """

    url: str
    wait_seconds: float
    operation: Operation

    def __post_init__(self) -> None:
        query = urlsplit(self.url).query
        if any(name.lower() == assumed.APIKEY_QUERY_PARAM for name, _ in parse_qsl(query, keep_blank_values=True)):
            raise ValueError("a polling URL must never hold the apikey")


# ---- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReserveTicket:
    ticket_type_id: str  # keep the leading zeros: "000002040006"
    quantity: int
    price_level_id: str | int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.ticket_type_id, str) or not self.ticket_type_id:
            raise ValueError("ticket_type_id must be a non-empty string (leading zeros matter)")
        if isinstance(self.quantity, bool) or not isinstance(self.quantity, int) or self.quantity < 1:
            raise ValueError("quantity must be a positive integer")


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    """POST /events/{event_id}/cart: `{"reserve": {...}}`, fields omitted when None/empty."""

    tickets: tuple[ReserveTicket, ...]
    areas: tuple[int | str, ...] = ()
    places: tuple[str, ...] = ()
    section: str | None = None
    row: str | None = None
    begin_seat: str | None = None
    end_seat: str | None = None
    accept_best_available: bool | None = None
    captcha_token: SecretStr | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.tickets:
            raise ValueError("a reserve needs at least one ticket")


@dataclass(frozen=True, slots=True)
class Address:
    line1: str
    city: str
    region_abbrev: str
    postal_code: str
    country_code: str = "US"
    country_id: str = "840"
    line2: str = ""
    unit: str = ""

    def __repr__(self) -> str:
        return "Address(***)"


@dataclass(frozen=True, slots=True)
class Card:
    """The card as TM wants it: a payment nonce or encrypted number (never a clear PAN)."""

    number: SecretStr = field(repr=False)
    cin: SecretStr | None = field(repr=False)  # None: not sent (never sent empty)
    expire_month: int = 0
    expire_year: int = 0
    encryption_key: str | None = None


@dataclass(frozen=True, slots=True)
class Payment:
    """PUT /events/{event_id}/cart/payment (seed 003)."""

    first_name: str = field(repr=False)
    last_name: str = field(repr=False)
    home_phone: str = field(repr=False)
    email_address: str = field(repr=False)
    amount: Decimal
    currency: str
    card: Card = field(repr=False)
    third_party_account_id: str  # the buyer's id at the partner; required for SafeTix
    type: str = "BRAINTREE"
    address: Address | None = field(default=None, repr=False)
    reference: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.amount, Decimal) or not self.amount.is_finite() or self.amount < 0:
            raise ValueError("amount must be a finite, non-negative Decimal")
        if not self.third_party_account_id or len(self.third_party_account_id) > 100:
            raise ValueError("third_party_account_id is required, at most 100 characters")


DEVICE_TYPES = frozenset({"web", "native"})
DEVICE_OSES = frozenset({"ios", "android", "other"})


@dataclass(frozen=True, slots=True)
class Device:
    """The buyer's device/app install (seed 003: unique per install, not per order)."""

    device_id: str
    device_type: str  # web | native
    device_os: str  # ios | android | other
    user_agent: str | None = None  # securerender only

    def __post_init__(self) -> None:
        if not self.device_id or len(self.device_id) > 50:
            raise ValueError("device_id is required, at most 50 characters")
        if self.device_type.lower() not in DEVICE_TYPES:
            raise ValueError(f"device_type must be one of {sorted(DEVICE_TYPES)}")
        if self.device_os.lower() not in DEVICE_OSES:
            raise ValueError(f"device_os must be one of {sorted(DEVICE_OSES)}")


@dataclass(frozen=True, slots=True)
class RenderTicket:
    """One ticket to refresh with securerender (all fields required by seed 003)."""

    event_id: str
    section: str
    row: str
    seat: str
    barcode: str


# ---- request bodies -----------------------------------------------------------------------------


def _price_level(value: str | int) -> str | int:
    if assumed.SEND_NUMERIC_PRICE_LEVEL_AS_NUMBER and isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def reserve_body(request: ReserveRequest) -> dict[str, Any]:
    tickets: list[dict[str, Any]] = []
    for ticket in request.tickets:
        entry: dict[str, Any] = {"id": ticket.ticket_type_id, "quantity": ticket.quantity}
        if ticket.price_level_id is not None:
            entry["price"] = {"id": _price_level(ticket.price_level_id)}
        tickets.append(entry)
    reserve: dict[str, Any] = {"tickets": tickets}
    if request.areas:
        reserve["areas"] = [{"id": area} for area in request.areas]
    if request.places:
        reserve["places"] = list(request.places)
    for name in ("section", "row", "begin_seat", "end_seat", "accept_best_available"):
        value = getattr(request, name)
        if value is not None:
            reserve[name] = value
    body: dict[str, Any] = {"reserve": reserve}
    if request.captcha_token is not None:
        body[assumed.CAPTCHA_TOKEN_FIELD] = request.captcha_token.get_secret_value()
    return body


def payment_body(cart_id: str, payment: Payment) -> dict[str, Any]:
    card: dict[str, Any] = {"number": payment.card.number.get_secret_value()}
    if payment.card.cin is not None and payment.card.cin.get_secret_value():
        card["cin"] = payment.card.cin.get_secret_value()
    card.update(expire_month=payment.card.expire_month, expire_year=payment.card.expire_year)
    if payment.card.encryption_key is not None:
        card["encryption_key"] = payment.card.encryption_key
    body: dict[str, Any] = {
        "first_name": payment.first_name,
        "last_name": payment.last_name,
        "home_phone": payment.home_phone,
        "type": payment.type,
        "reference": payment.reference,
        "amount": format(payment.amount, "f"),  # a string, as in seed 003 ("54.41")
        "currency": payment.currency,
        "card": card,
        "email_address": payment.email_address,
        "third_party_account_id": payment.third_party_account_id,
    }
    if payment.address is not None:
        address = payment.address
        body["address"] = {
            "line1": address.line1,
            "line2": address.line2,
            "unit": address.unit,
            "city": address.city,
            "country": {"code": address.country_code, "id": address.country_id},
            "region": {"abbrev": address.region_abbrev},
            "postal_code": address.postal_code,
        }
    return {"cartId": cart_id, "payment": body}  # `cartId`: seed 003 (the 2017 doc had cart_id)


def commit_body(cart_id: str, source_account_id: str | None) -> dict[str, Any]:
    body = {"cart_id": cart_id}
    if source_account_id is not None:
        body["source_account_id"] = source_account_id
    return body


def order_tickets_body(device: Device, third_party_account_id: str) -> dict[str, Any]:
    if not third_party_account_id or len(third_party_account_id) > 100:
        raise ValueError("third_party_account_id is required, at most 100 characters")
    return {
        "device_id": device.device_id,
        "device_type": device.device_type.lower(),
        "device_os": device.device_os.lower(),
        "third_party_account_id": third_party_account_id,
    }


def secure_render_body(device: Device, tickets: tuple[RenderTicket, ...] | list[RenderTicket]) -> dict[str, Any]:
    def case(value: str) -> str:
        return value.upper() if assumed.SECURE_RENDER_UPPERCASE_DEVICE else value.lower()

    body: dict[str, Any] = {
        "deviceId": device.device_id,
        "deviceType": case(device.device_type),
        "deviceOs": case(device.device_os),
        "tickets": [
            {"eventId": t.event_id, "section": t.section, "row": t.row, "seat": t.seat, "barcode": t.barcode}
            for t in tickets
        ],
    }
    if device.user_agent is not None:
        body["userAgent"] = device.user_agent
    return body


__all__ = ["CART_OPERATIONS", "DEVICE_OSES", "DEVICE_TYPES", "Address", "Card", "Device", "Operation", "Payment",
    "Polling", "RenderTicket", "ReserveRequest", "ReserveTicket", "commit_body", "order_tickets_body",
    "payment_body", "reserve_body", "secure_render_body"]
