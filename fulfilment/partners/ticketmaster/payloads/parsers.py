"""Parsers: TM's answers (JSON decoded with parse_float=Decimal) into the values of answers.py."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from fulfilment.partners.ticketmaster import assumed
from fulfilment.partners.ticketmaster.errors import MalformedResponse
from fulfilment.partners.ticketmaster.payloads.answers import (
    Area,
    Availability,
    Cart,
    CartCharge,
    CartItem,
    CartPayment,
    CartTicket,
    CartTotals,
    Committed,
    EventDetails,
    InventoryRow,
    Offer,
    OfferCharge,
    OrderTicket,
    OrderTickets,
    PriceLevel,
    RenderedTicket,
    SecureEntry,
    SecureRenderResult,
    TicketAvailability,
    TicketError,
    TicketType,
    TicketTypePrice,
    UnredeemedOrder,
)
from fulfilment.partners.ticketmaster.payloads.reading import (
    _epoch_ms,
    _ids,
    _list,
    _money,
    _obj,
    _opt_bool,
    _opt_int,
    _opt_list,
    _opt_money,
    _opt_str,
    _req_str,
    _secret,
    _ticket_type_id,
    _zone,
)

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


__all__ = ["cart_id_of", "delay_date_start", "order_number_of", "parse_availability", "parse_cart",
    "parse_committed", "parse_event_details", "parse_order_tickets", "parse_polling", "parse_secure_render",
    "parse_unredeemed"]
