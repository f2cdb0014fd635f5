"""Parse TBB `data` objects into the partner-neutral Quote and Order.

A response that does not have the documented shape raises `MalformedResponse`,
a transient error: it says nothing certain about what the partner did.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

from fulfilment.partners.base import Order, PartnerError, Quote


class MalformedResponse(PartnerError):
    def __init__(self, what: str) -> None:
        super().__init__("MALFORMED_RESPONSE", what)


def parse_timestamp(value: Any, field: str) -> dt.datetime:
    if not isinstance(value, str):
        raise MalformedResponse(f"{field} is not a timestamp string")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedResponse(f"{field} is not ISO-8601: {value!r}") from None
    if parsed.tzinfo is None:
        raise MalformedResponse(f"{field} has no UTC offset: {value!r}")
    return parsed.astimezone(dt.UTC)


def _money(value: Any, field: str) -> Decimal:
    try:
        return Decimal(str(value)).quantize(Decimal("0.01"))
    except (InvalidOperation, ValueError):
        raise MalformedResponse(f"{field} is not a number: {value!r}") from None


def _get(data: Any, *path: str) -> Any:
    node = data
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise MalformedResponse(f"missing field {'.'.join(path)}")
        node = node[key]
    return node


def parse_quote(data: Any) -> Quote:
    return Quote(
        quote_id=str(_get(data, "quote_id")),
        expires_at=parse_timestamp(_get(data, "expires_at"), "expires_at"),
        section_name=str(_get(data, "seats", "section_name")),
        row_name=_get(data, "seats").get("row_name"),
        quantity=int(_get(data, "seats", "quantity")),
        unit_price=_money(_get(data, "pricing", "unit_price"), "pricing.unit_price"),
        subtotal=_money(_get(data, "pricing", "subtotal"), "pricing.subtotal"),
        currency=str(_get(data, "pricing").get("currency", "USD")),
    )


def parse_order(data: Any) -> Order:
    seats = _get(data, "seats")
    pricing = data.get("pricing") or {}
    delivery = data.get("delivery") or {}
    return Order(
        order_id=str(_get(data, "order_id")),
        status=str(_get(data, "status")),
        quote_id=str(_get(data, "quote_id")),
        transfer_email=delivery.get("transfer_email"),
        seat_range=seats.get("seat_range"),
        row_name=seats.get("row_name_display") or seats.get("row_name"),
        unit_price=_money(pricing["unit_price"], "pricing.unit_price") if "unit_price" in pricing else None,
        subtotal=_money(pricing["subtotal"], "pricing.subtotal") if "subtotal" in pricing else None,
    )
