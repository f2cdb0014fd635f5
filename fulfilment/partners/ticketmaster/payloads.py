"""What goes to Ticketmaster and what comes back, as typed values.

Requests are built from small frozen dataclasses (`ReserveRequest`, `Payment`, `Device`, ...);
answers are parsed into frozen dataclasses.  Parsers take JSON decoded with
`parse_float=Decimal`, so every amount is the exact Decimal TM sent (never a float).  A body
without the documented shape raises `MalformedResponse` (never a KeyError, never a half-filled
success); what that means for each call is the client's business (api.py).

Secrets (ticket tokens, the order token and the URLs that embed it, card data, captcha
solutions) are `pydantic.SecretStr` fields with `repr=False`: printing or logging a value never
shows them; `.get_secret_value()` does, on purpose.  Buyer PII (names, email, phone, address) is
kept out of reprs too.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import SecretStr

from fulfilment.partners.ticketmaster import assumed
from fulfilment.partners.ticketmaster.errors import MalformedResponse

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


# ---- parsing helpers ---------------------------------------------------------------------------


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedResponse(f"{where} is not an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedResponse(f"{where} is not a list")
    return value


def _opt_list(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    return [] if value is None else _list(value, f"{where}.{key}")


def _opt_str(obj: dict[str, Any], key: str, where: str, *, numbers: bool = True) -> str | None:
    """A string field; numbers are accepted (as text) unless `numbers` is False (ids whose leading
    zeros a number would have lost)."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if numbers and isinstance(value, int | Decimal) and not isinstance(value, bool):
        return format(value, "f") if isinstance(value, Decimal) else str(value)
    raise MalformedResponse(f"{where}.{key} is not a string")


def _req_str(obj: dict[str, Any], key: str, where: str, *, numbers: bool = True) -> str:
    value = _opt_str(obj, key, where, numbers=numbers)
    if not value:
        raise MalformedResponse(f"missing field {where}.{key}")
    return value


def _ticket_type_id(obj: dict[str, Any], key: str, where: str, *, required: bool) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise MalformedResponse(f"{where}.{key} is not a string id (a number would have lost its leading zeros)")
    return value


def _money(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise MalformedResponse(f"{where} is not an amount")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise MalformedResponse(f"{where} is not an amount: {str(value)[:40]!r}") from None
    if not amount.is_finite():
        raise MalformedResponse(f"{where} is not a finite amount")
    return amount


def _opt_money(obj: dict[str, Any], key: str, where: str) -> Decimal | None:
    value = obj.get(key)
    return None if value is None else _money(value, f"{where}.{key}")


def _opt_int(obj: dict[str, Any], key: str, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise MalformedResponse(f"{where}.{key} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise MalformedResponse(f"{where}.{key} is not an integer")


def _opt_bool(obj: dict[str, Any], key: str, where: str) -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise MalformedResponse(f"{where}.{key} is not a boolean")


def _ids(values: list[Any], where: str) -> tuple[str, ...]:
    out = []
    for i, value in enumerate(values):
        if isinstance(value, dict):
            value = value.get("id")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise MalformedResponse(f"{where}[{i}] has no id")
        out.append(str(value))
    return tuple(out)


def _secret(obj: dict[str, Any], key: str, where: str) -> SecretStr | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedResponse(f"{where}.{key} is not a string")
    return SecretStr(value)


def _epoch_ms(obj: dict[str, Any], key: str, where: str) -> dt.datetime | None:
    millis = _opt_int(obj, key, where)
    if millis is None:
        return None
    try:
        return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        raise MalformedResponse(f"{where}.{key} is not an epoch in milliseconds") from None


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


# ---- parsers -------------------------------------------------------------------------------


def parse_polling(body: Any) -> tuple[str, float]:
    """A 202 answer: (polling_url as sent, wait seconds)."""
    obj = _obj(body, "polling answer")
    url = obj.get("polling_url")
    if not isinstance(url, str) or not url.strip():
        raise MalformedResponse("202 without a polling_url")
    wait = obj.get("wait")
    if wait is None:
        seconds = assumed.DEFAULT_POLL_WAIT_SECONDS
    else:
        seconds = float(_money(wait, "wait"))
    return url.strip(), min(max(seconds, 0.0), assumed.MAX_POLL_WAIT_SECONDS)


def parse_event_details(body: Any, event_id: str) -> EventDetails:
    obj = _obj(body, "body")
    event = _obj(obj.get("event"), "event")
    where = "event"
    start_utc, start_date = _event_start(event.get("eventdate"))
    venue = event.get("venue")
    timezone = None
    if isinstance(venue, dict) and isinstance(venue.get("location"), dict):
        timezone = _opt_str(venue["location"], "time_zone", "event.venue.location", numbers=False)
    quantities = event.get("quantities")
    limit = _opt_int(quantities, "limit", "event.quantities") if isinstance(quantities, dict) else None
    areas: list[Area] = []
    for g, group in enumerate(_opt_list(event, "area_groups", where)):
        group = _obj(group, f"event.area_groups[{g}]")
        label = _opt_str(group, "label", "event.area_groups")
        for a, area in enumerate(_opt_list(group, "areas", f"event.area_groups[{g}]")):
            w = f"event.area_groups[{g}].areas[{a}]"
            area = _obj(area, w)
            areas.append(Area(_req_str(area, "id", w), _opt_str(area, "description", w), label,
                              _ids(_opt_list(area, "prices", w), f"{w}.prices")))
    levels = []
    for p, price in enumerate(_opt_list(event, "prices", where)):
        w = f"event.prices[{p}]"
        price = _obj(price, w)
        levels.append(PriceLevel(_req_str(price, "id", w), _opt_str(price, "description", w),
                                 tuple(_money(v, f"{w}.amounts") for v in _opt_list(price, "amounts", w)),
                                 _ids(_opt_list(price, "areas", w), f"{w}.areas")))
    types = []
    for t, ticket in enumerate(_opt_list(event, "tickets", where)):
        w = f"event.tickets[{t}]"
        ticket = _obj(ticket, w)
        prices = []
        for p, price in enumerate(_opt_list(ticket, "prices", w)):
            pw = f"{w}.prices[{p}]"
            price = _obj(price, pw)
            prices.append(TicketTypePrice(_req_str(price, "id", pw), _opt_money(price, "amount", pw)))
        type_id = _ticket_type_id(ticket, "id", w, required=True)
        assert type_id is not None
        types.append(TicketType(type_id, _opt_str(ticket, "description", w), tuple(prices),
                                _ids(_opt_list(ticket, "areas", w), f"{w}.areas")))
    return EventDetails(
        event_id=_opt_str(event, "id", where, numbers=False) or event_id,
        name=_opt_str(event, "name", where),
        api_transactable=_opt_bool(obj, "api_transactable", "body"),
        start_utc=start_utc,
        start_date=start_date,
        timezone=timezone,
        currency=_opt_str(event, "currency_code", where),
        ticket_limit=limit,
        areas=tuple(areas),
        price_levels=tuple(levels),
        ticket_types=tuple(types),
    )


def _event_start(value: Any) -> tuple[dt.datetime | None, dt.date | None]:
    """`eventdate` {"format": "datetime"|"date", "value": ...} (assumed.py: "Z" means UTC)."""
    if value is None:
        return None, None
    obj = _obj(value, "event.eventdate")
    raw = obj.get("value")
    if raw is None:
        return None, None
    if not isinstance(raw, str):
        raise MalformedResponse("event.eventdate.value is not a string")
    try:
        if obj.get("format") == "date" or len(raw) == 10:
            return None, dt.date.fromisoformat(raw)
        parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedResponse("event.eventdate.value is not ISO-8601") from None
    if parsed.tzinfo is None:
        return None, parsed.date()  # a local time without its zone: we do not guess the instant
    start = parsed.astimezone(dt.UTC)
    return start, start.date()


def parse_availability(body: Any) -> Availability:
    obj = _obj(body, "body")
    event = _obj(obj.get("event"), "event")
    tickets = []
    for t, ticket in enumerate(_list(event.get("tickets"), "event.tickets")):
        w = f"event.tickets[{t}]"
        ticket = _obj(ticket, w)
        rows = []
        for r, row in enumerate(_opt_list(ticket, "inventory", w)):
            rw = f"{w}.inventory[{r}]"
            row = _obj(row, rw)
            rows.append(InventoryRow(
                section=_opt_str(row, "section", rw),
                row=_opt_str(row, "row", rw),
                seats=tuple(_seat(s, f"{rw}.seats") for s in _opt_list(row, "seats", rw)),
                places=tuple(_str_item(p, f"{rw}.places") for p in _opt_list(row, "places", rw)),
                has_even_odd_mix=_opt_bool(row, "hasEvenOddMix", rw),
            ))
        offers = []
        for o, offer in enumerate(_opt_list(ticket, "offers", w)):
            ow = f"{w}.offers[{o}]"
            offer = _obj(offer, ow)
            charges = []
            for c, charge in enumerate(_opt_list(offer, "charges", ow)):
                cw = f"{ow}.charges[{c}]"
                charge = _obj(charge, cw)
                charges.append(OfferCharge(_money(charge.get("amount"), f"{cw}.amount"),
                                           _opt_str(charge, "reason", cw), _opt_str(charge, "type", cw)))
            type_id = _ticket_type_id(offer, "ticketTypeId", ow, required=True)
            assert type_id is not None
            offers.append(Offer(
                ticket_type_id=type_id,
                price_level_id=_opt_str(offer, "priceLevelId", ow),
                name=_opt_str(offer, "offerName", ow),
                description=_opt_str(offer, "offerDescription", ow),
                face_value=_opt_money(offer, "faceValue", ow),
                currency=_opt_str(offer, "currency", ow),
                charges=tuple(charges),
                area_ids=_ids(_opt_list(offer, "areas", ow), f"{ow}.areas"),
            ))
        tickets.append(TicketAvailability(
            available=_opt_int(ticket, "available", w),
            total=_opt_int(ticket, "total", w),
            current_ticket_limit=_opt_int(ticket, "currentTicketLimit", w),
            inventory=tuple(rows),
            offers=tuple(offers),
        ))
    return Availability(
        event_id=_opt_str(event, "id", "event", numbers=False),
        restrict_single=_opt_bool(event, "restrictSingle", "event"),
        event_ticket_limit=_opt_int(event, "eventTicketLimit", "event"),
        tickets=tuple(tickets),
    )


def _seat(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | Decimal) and not isinstance(value, bool) and value == int(value):
        return str(int(value))
    raise MalformedResponse(f"{where} holds something that is not a seat")


def _str_item(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise MalformedResponse(f"{where} holds a non-string")
    return value


def _totals(value: Any, where: str) -> CartTotals:
    obj = _obj(value, where)
    return CartTotals(
        currency=_opt_str(obj, "currency_code", where, numbers=False),
        grand=_money(obj.get("grand"), f"{where}.grand"),
        fee=_opt_money(obj, "fee", where),
        merchandise=_opt_money(obj, "merchandise", where),
        delivery=_opt_money(obj, "delivery", where),
        tax=_opt_money(obj, "tax", where),
        unpaid=_opt_money(obj, "unpaid", where),
        upsell=_opt_money(obj, "upsell", where),
    )


def cart_id_of(body: Any) -> str | None:
    """The cart id of an answer, if it has a readable one (kept with an unknown outcome)."""
    if isinstance(body, dict) and isinstance(body.get("cart_id"), str) and body["cart_id"]:
        return str(body["cart_id"])
    return None


def parse_cart(body: Any, *, cart_id: str | None = None) -> Cart:
    """A reserve or payment answer: `{"cart_id", "cart": {items, totals, payments, hold_time}}`
    (the 2017 payment answer has no cart_id: the one sent is used)."""
    obj = _obj(body, "body")
    found = cart_id_of(obj) or cart_id
    if not found:
        raise MalformedResponse("missing field cart_id")
    cart = _obj(obj.get("cart"), "cart")
    hold_time = _opt_int(cart, "hold_time", "cart")
    if hold_time is not None and hold_time < 0:
        raise MalformedResponse("cart.hold_time is negative")
    items = []
    for i, item in enumerate(_opt_list(cart, "items", "cart")):
        w = f"cart.items[{i}]"
        item = _obj(item, w)
        tickets = []
        for t, ticket in enumerate(_opt_list(item, "tickets", w)):
            tw = f"{w}.tickets[{t}]"
            ticket = _obj(ticket, tw)
            charges = []
            for c, charge in enumerate(_opt_list(ticket, "charges", tw)):
                cw = f"{tw}.charges[{c}]"
                charge = _obj(charge, cw)
                charges.append(CartCharge(_opt_str(charge, "type", cw), _money(charge.get("price"), f"{cw}.price"),
                                          _opt_int(charge, "quantity", cw), _opt_money(charge, "tax", cw)))
            tickets.append(CartTicket(_ticket_type_id(ticket, "id", tw, required=False),
                                      _opt_str(ticket, "description", tw), _opt_int(ticket, "quantity", tw),
                                      tuple(charges)))
        items.append(CartItem(
            type=_opt_str(item, "type", w),
            event_id=_opt_str(item, "event_id", w, numbers=False),
            section=_opt_str(item, "section", w),
            row=_opt_str(item, "row", w),
            start_seat=_opt_str(item, "start_seat_number", w),
            end_seat=_opt_str(item, "end_seat_number", w),
            num_seats=_opt_int(item, "num_seats", w),
            tickets=tuple(tickets),
            totals=_totals(item["totals"], f"{w}.totals") if item.get("totals") is not None else None,
        ))
    totals = _totals(cart.get("totals"), "cart.totals")
    currency = totals.currency
    if currency is None:  # assumed.py: then every item's totals name the same currency
        currencies = {item.totals.currency for item in items if item.totals is not None and item.totals.currency}
        if len(currencies) != 1:
            raise MalformedResponse("cart.totals without currency_code, and the items do not name one currency")
        currency = currencies.pop()
    payments = []
    for p, payment in enumerate(_opt_list(cart, "payments", "cart")):
        pw = f"cart.payments[{p}]"
        payment = _obj(payment, pw)
        payments.append(CartPayment(_opt_str(payment, "payment_id", pw) or _opt_str(payment, "id", pw),
                                    _opt_str(payment, "type", pw), _opt_money(payment, "amount", pw)))
    return Cart(cart_id=found, hold_time_seconds=hold_time, items=tuple(items), totals=totals, currency=currency,
                payments=tuple(payments))


def order_number_of(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("order_number"), str) and body["order_number"]:
        return str(body["order_number"])
    return None


def parse_committed(body: Any, *, cart_id: str | None) -> Committed:
    """A commit's 200.  Lenient on purpose: an order number or token is proof the order exists, so
    an unreadable optional field never turns the answer into an error (it is named in `unreadable`)."""
    obj = _obj(body, "body")
    unreadable: list[str] = []

    def attempt(name: str, read: Any) -> Any:
        if obj.get(name) is None:
            return None
        try:
            return read()
        except MalformedResponse:
            unreadable.append(name)
            return None

    order_number = attempt("order_number", lambda: _req_str(obj, "order_number", "body"))
    order_token = attempt("order_token", lambda: _secret(obj, "order_token", "body"))
    if order_number is None and order_token is None:
        raise MalformedResponse("commit answer without an order_number or an order_token")
    return Committed(
        cart_id=cart_id,
        order_number=order_number,
        order_token=order_token,
        grand_total=attempt("grand_total", lambda: _money(obj["grand_total"], "grand_total")),
        currency=attempt("currency_code", lambda: _opt_str(obj, "currency_code", "body", numbers=False)),
        redemption_url=attempt("redemption_url", lambda: _secret(obj, "redemption_url", "body")),
        tm_app_url=attempt("tm_app_url", lambda: _secret(obj, "tm_app_url", "body")),
        unreadable=tuple(unreadable),
    )


def _ticket_error(value: Any, where: str) -> TicketError | None:
    if value is None:
        return None
    obj = _obj(value, where)
    message = obj.get("message", obj.get("error"))
    return TicketError(_opt_int(obj, "code", where), message if isinstance(message, str) else "")


def parse_order_tickets(body: Any) -> OrderTickets:
    obj = _obj(body, "body")
    tickets = []
    for t, ticket in enumerate(_list(obj.get("tickets"), "tickets")):
        w = f"tickets[{t}]"
        ticket = _obj(ticket, w)
        secure = None
        if ticket.get("secure_entry_data") is not None:
            sw = f"{w}.secure_entry_data"
            data = _obj(ticket["secure_entry_data"], sw)
            secure = SecureEntry(_secret(data, "token", sw), _opt_str(data, "render_type", sw),
                                 _opt_str(data, "segment_type", sw), _ticket_error(data.get("error"), f"{sw}.error"))
            # No token: a barcode-only ticket (seed 003: rendered as a QR code of its barcode), or a SafeTix
            # ticket whose token is not given yet (delay): the flow reads every delay signal.
        tickets.append(OrderTicket(
            order_number=_opt_str(ticket, "order_number", w),
            event_id=_opt_str(ticket, "event_id", w, numbers=False),
            barcode=_opt_str(ticket, "barcode_id", w, numbers=False) or None,  # "" = no barcode
            section=_opt_str(ticket, "section", w),
            row=_opt_str(ticket, "row", w),
            seat=_opt_str(ticket, "seat_name", w),
            seat_id=_opt_str(ticket, "seat_id", w),
            voided=_opt_bool(ticket, "voided", w),
            secure_entry=secure,
        ))
    delivery = obj.get("delivery")
    delivery = _obj(delivery, "delivery") if delivery is not None else {}
    info = obj.get("additional_info")
    info = _obj(info, "additional_info") if info is not None else {}
    delay = _opt_str(info, "safetix_delivery_delay_date", "additional_info", numbers=False)
    try:
        delay_date = dt.date.fromisoformat(delay) if delay else None
    except ValueError:
        raise MalformedResponse("additional_info.safetix_delivery_delay_date is not YYYY-MM-DD") from None
    return OrderTickets(
        customer_email=_opt_str(obj, "customer_email", "body", numbers=False),
        service_level=_opt_str(delivery, "service_level", "delivery"),
        carrier=_opt_str(delivery, "carrier", "delivery"),
        voided=_opt_bool(obj, "voided", "body"),
        tickets=tuple(tickets),
        delivery_delay_date=delay_date,
        third_party_account_id=_opt_str(obj, "third_party_account_id", "body"),
    )


def delay_date_start(day: dt.date, timezone: str | None) -> dt.datetime:
    """The first instant (UTC) at which `safetix_delivery_delay_date` has begun: midnight in the
    event's zone when it is known, else midnight at UTC-12, the last place on Earth it starts
    (assumed.py: the date carries no zone)."""
    zone = _zone(timezone)
    if zone is None:
        fallback = dt.timezone(dt.timedelta(hours=assumed.DELAY_DATE_FALLBACK_UTC_OFFSET_HOURS))
        return dt.datetime.combine(day, dt.time(0), fallback).astimezone(dt.UTC)
    return dt.datetime.combine(day, dt.time(0), zone).astimezone(dt.UTC)


def parse_unredeemed(body: Any) -> tuple[UnredeemedOrder, ...]:
    obj = _obj(body, "body")
    orders = []
    for i, entry in enumerate(_list(obj.get("data"), "data")):
        w = f"data[{i}]"
        entry = _obj(entry, w)
        orders.append(UnredeemedOrder(
            order_source_account_id=_opt_str(entry, "order_source_account_id", w, numbers=False),
            event_id=_opt_str(entry, "event_id", w, numbers=False),
            purchased_at=_epoch_ms(entry, "purchase_date_time", w),
            event_at=_epoch_ms(entry, "event_date_time", w),
            email_status=_opt_int(entry, "email_status", w),
            order_number=_opt_str(entry, "order_number", w),
            purchase_email=_opt_str(entry, "purchase_email_address", w, numbers=False),
        ))
    return tuple(orders)


def parse_secure_render(body: Any) -> SecureRenderResult:
    obj = _obj(body, "body")
    tickets = []
    for t, ticket in enumerate(_list(obj.get("tickets"), "tickets")):
        w = f"tickets[{t}]"
        ticket = _obj(ticket, w)
        pass_data = ticket.get("passData")
        if pass_data is not None and not isinstance(pass_data, dict):
            raise MalformedResponse(f"{w}.passData is not an object")
        rendered = RenderedTicket(
            event_id=_opt_str(ticket, "eventId", w, numbers=False),
            section=_opt_str(ticket, "section", w),
            row=_opt_str(ticket, "row", w),
            seat=_opt_str(ticket, "seat", w),
            barcode=_opt_str(ticket, "barcode", w, numbers=False),
            token=_secret(ticket, "token", w),
            render_type=_opt_str(ticket, "renderType", w),
            pass_data=pass_data,
            error=_ticket_error(ticket.get("error"), f"{w}.error"),
        )
        if rendered.token is None and rendered.error is None:
            raise MalformedResponse(f"{w} has neither a token nor an error")
        tickets.append(rendered)
    return SecureRenderResult(tuple(tickets), _opt_bool(obj, "nfcCapableDevice", "body"))
