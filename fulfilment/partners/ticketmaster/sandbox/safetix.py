"""SafeTix: rotating tokens, the order management view and SecureRender per-ticket answers (seed 003).

A token is what seed 003's example decodes to: base64 of ``{"b": barcode, "t", "ck", "ek", "rt"}``
with fresh random ``t``/``ck``/``ek`` on every issue, so the barcode never changes and the token
always does. Delivery delay, barcode-only events and error shapes: see ``assumed.py``.

A delivery delay (``Delay``) comes from the catalogue (the theatre event: a date, tokens null with
``secure_entry_data.error`` before it) or from the runtime setting ``safetix_delays`` (config.py),
which replaces it per SafeTix event (or ``*``) with one of the quieter signals the public reference
shows: ``service_level`` (``delivery.service_level`` SAFETIX, tokens null, no error, no date) or
``date`` (a future ``additional_info.safetix_delivery_delay_date``, tokens null, no error). Tokens
come once the delay ends on the sandbox clock; until then SecureRender answers
``safetix.delivery.delayed`` for the order's tickets.

Empty barcodes (``empty_barcode_events``, config): seed 003's own SafeTix example answers
``barcode_id: ""`` beside a token. For those events order management shows every SafeTix ticket's
``barcode_id`` as ``""`` (the ticket keeps its barcode inside: the token still carries it); a
SecureRender request can then only send an empty barcode and answers ``missing.barcode.attribute``,
so the way to a fresh token is order management again (each call issues a new token).
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from fulfilment.partners.sandbox_kit.clock import parse_iso_utc

from . import assumed
from .catalogue import Event
from .models import Order, Ticket
from .responses import money


@dataclass(frozen=True)
class Device:
    device_id: str
    device_type: str
    device_os: str
    third_party_account_id: str


def new_token(barcode: str) -> str:
    payload = {
        "b": barcode,
        "t": base64.b64encode(secrets.token_bytes(45)).decode("ascii"),
        "ck": secrets.token_hex(20),
        "ek": secrets.token_hex(20),
        "rt": "rotating_symbology",
    }
    return base64.b64encode(json.dumps(payload, separators=(",", ":")).encode("utf-8")).decode("ascii")


DELAY_SIGNALS = ("service_level", "date")  # the ``signal`` of a ``safetix_delays`` entry


@dataclass(frozen=True)
class Delay:
    """A SafeTix delivery delay: tokens are withheld before ``ends``.

    ``signal``: ``error`` (the catalogue's: the date and ``secure_entry_data.error``), ``service_level``
    or ``date`` (see the module docstring); ``shown_date``: the ``safetix_delivery_delay_date`` the
    answers carry (before and after ``ends``), None for ``service_level``."""

    signal: str
    shown_date: str | None
    ends: datetime

    def active(self, now: datetime) -> bool:
        return now < self.ends


def _local_midnight(event: Event, day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), time(0), tzinfo=event.zone).astimezone(UTC)


def delay_of(event: Event, overrides: Mapping[str, Mapping[str, str]]) -> Delay | None:
    """The event's delivery delay: its ``safetix_delays`` entry (or ``*``), else the catalogue's."""
    if event.delivery != "safetix":
        return None
    entry = overrides.get(event.id) or overrides.get("*")
    if entry is None:
        day = event.delivery_delay_date
        return Delay("error", day, _local_midnight(event, day)) if day is not None else None
    until = parse_iso_utc(entry["until"]) if "until" in entry else None
    ends = until if until is not None else _local_midnight(event, entry["date"])
    shown = entry.get("date") or ends.astimezone(event.zone).date().isoformat()
    return Delay(entry["signal"], shown if entry["signal"] == "date" else None, ends)


def secure_entry_data(event: Event, ticket: Ticket, now: datetime, delay: Delay | None) -> dict[str, Any]:
    if event.delivery == "barcode":
        return {"token": None, "render_type": "barcode", "segment_type": event.segment_type}
    if delay is not None and delay.active(now):
        withheld: dict[str, Any] = {"token": None, "render_type": "rotating_symbology",
                                    "segment_type": event.segment_type}
        if delay.signal == "error":
            withheld["error"] = {"code": assumed.DELAYED_TOKEN_ERROR_CODE,
                                 "message": assumed.DELAYED_TOKEN_MESSAGE.format(date=delay.shown_date)}
        return withheld
    return {"token": new_token(ticket.barcode), "render_type": "rotating_symbology", "segment_type": event.segment_type}


def _ticket_charges(ticket: Ticket, currency: str) -> list[dict[str, Any]]:
    c = ticket.charges

    def charge(description: str, sub_type: str, kind: str, amount: Any) -> dict[str, Any]:
        return {"description": description, "sub_type": sub_type, "type": kind,
                "amount": {"amount": money(amount), "currency": currency}}

    return [
        charge("Price", "price", "price", c.face),
        charge("Distance Charge", "distance_charge", "fee", c.distance),
        charge("Facility Charge", "facility_charge", "fee", c.facility),
        charge("Service Charge", "service_charge", "fee", c.service),
        charge("Tax", "tax", "tax", c.face_tax + c.service_tax),
    ]


def order_management_view(order: Order, device: Device, now: datetime, delay: Delay | None,
                          empty_barcodes: bool = False) -> dict[str, Any]:
    event = order.event
    order_date = order.created_at.astimezone(event.zone).date().isoformat()
    safetix = event.delivery == "safetix"
    tickets = [{
        "barcode_id": "" if empty_barcodes and safetix else ticket.barcode,
        "display_id": order.order_number,
        "event_code": event.code,
        "event_host": event.host,
        "event_id": event.id,
        "is_ga": False,
        "is_national_vip": False,
        "order_date": order_date,
        "order_number": order.order_number,
        "portal": ticket.portal,
        "row": ticket.row,
        "seat_id": ticket.seat_id,
        "seat_name": ticket.seat_name,
        "section": ticket.section,
        "voided": ticket.voided,
        "charges": _ticket_charges(ticket, event.currency),
        "secure_entry_data": secure_entry_data(event, ticket, now, delay),
    } for ticket in order.tickets]
    delay_date = delay.shown_date if delay is not None else None
    return {
        "customer_email": order.customer_email,
        "third_party_source": assumed.THIRD_PARTY_SOURCE,
        "delivery": {
            "carrier": "TICKETMASTER",
            "service_level": "SAFETIX" if safetix else "ETICKET",
            "description": {"short": "SafeTix Rotating Entry Token" if safetix else "eTickets"},
        },
        "tickets": tickets,
        "voided": all(t.voided for t in order.tickets),
        "additional_info": {"safetix_delivery_delay_date": delay_date} if delay_date else {},
        "device_id": device.device_id,
        "device_type": device.device_type,
        "device_os": device.device_os,
        "nfc_capable_device": device.device_type.lower() == "native",
        "third_party_account_id": order.third_party_account_id,
        "tm_sends_redemption_claim_email": False,
    }


def render_ticket(requested: dict[str, Any], found: tuple[Order, Ticket] | None, user_id: str, device_os: str,
                  now: datetime, delay_of_event: Callable[[Event], Delay | None]) -> tuple[dict[str, Any], bool]:
    """One SecureRender ticket answer: (the ticket as echoed + token or error, ok)."""
    echo: dict[str, Any] = {key: requested[key] for key in assumed.SR_REQUIRED_TICKET_FIELDS if key in requested}

    def error(code: int, name: str) -> tuple[dict[str, Any], bool]:
        return {**echo, "error": {"code": code, "error": name}}, False

    for name in assumed.SR_REQUIRED_TICKET_FIELDS:
        value = requested.get(name)
        if not isinstance(value, str) or not value.strip():
            return error(400, assumed.SR_MISSING_ATTRIBUTE.format(field=name))
    if found is None:
        return error(400, assumed.SR_UNKNOWN_BARCODE)
    order, ticket = found
    if (requested["eventId"], requested["section"], requested["row"], requested["seat"]) != (
            order.event.id, ticket.section, ticket.row, ticket.seat_name):
        return error(400, assumed.SR_ATTRIBUTE_MISMATCH)
    if user_id != order.third_party_account_id:
        return error(403, assumed.SR_USER_MISMATCH)
    if ticket.voided:
        return error(400, assumed.SR_VOIDED)
    if order.event.delivery != "safetix":
        return error(400, assumed.SR_NOT_SAFETIX)
    delay = delay_of_event(order.event)
    if delay is not None and delay.active(now):
        return error(400, assumed.SR_DELIVERY_DELAYED)
    return {**echo, "token": new_token(ticket.barcode), "renderType": "rotating_symbology",
            "passData": pass_data(device_os)}, True


def pass_data(device_os: str) -> dict[str, Any]:
    return {"ios": {"pkPassId": str(uuid.uuid4())}} if device_os.lower() == "ios" else {}
