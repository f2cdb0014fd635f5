"""SafeTix: rotating tokens, the order management view and SecureRender per-ticket answers (seed 003).

A token is what seed 003's example decodes to: base64 of ``{"b": barcode, "t", "ck", "ek", "rt"}``
with fresh random ``t``/``ck``/``ek`` on every issue, so the barcode never changes and the token
always does. Delivery delay, barcode-only events and error shapes: see ``assumed.py``.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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


def delivery_delayed(event: Event, now: datetime) -> bool:
    """True before the event's delivery delay date (midnight, event-local)."""
    date = event.delivery_delay_date
    return date is not None and now.astimezone(event.zone).date().isoformat() < date


def secure_entry_data(event: Event, ticket: Ticket, now: datetime) -> dict[str, Any]:
    if event.delivery == "barcode":
        return {"token": None, "render_type": "barcode", "segment_type": event.segment_type}
    if delivery_delayed(event, now):
        date = event.delivery_delay_date or ""
        return {"token": None, "render_type": "rotating_symbology", "segment_type": event.segment_type,
                "error": {"code": assumed.DELAYED_TOKEN_ERROR_CODE,
                          "message": assumed.DELAYED_TOKEN_MESSAGE.format(date=date)}}
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


def order_management_view(order: Order, device: Device, now: datetime) -> dict[str, Any]:
    event = order.event
    order_date = order.created_at.astimezone(event.zone).date().isoformat()
    safetix = event.delivery == "safetix"
    tickets = [{
        "barcode_id": ticket.barcode,
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
        "secure_entry_data": secure_entry_data(event, ticket, now),
    } for ticket in order.tickets]
    delay_date = event.delivery_delay_date
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
                  now: datetime) -> tuple[dict[str, Any], bool]:
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
    if delivery_delayed(order.event, now):
        return error(400, assumed.SR_DELIVERY_DELAYED)
    return {**echo, "token": new_token(ticket.barcode), "renderType": "rotating_symbology",
            "passData": pass_data(device_os)}, True


def pass_data(device_os: str) -> dict[str, Any]:
    return {"ios": {"pkPassId": str(uuid.uuid4())}} if device_os.lower() == "ios" else {}
