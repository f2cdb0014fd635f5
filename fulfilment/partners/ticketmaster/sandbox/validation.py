"""Request bodies -> typed requests, or the documented (or ASSUMED) error.

Structural problems of a reserve or commit body answer 21001 "Invalid reserve request data
structure" (seed 004 / 2017 FAQ); bad field values answer 400 10002 naming the fields. SecureRender
problems are raised as ``SecureRenderError`` (its own ``{"code", "error"}`` style, seed 003).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.requests import Request

from . import assumed
from .assumed import ErrorSpec
from .errors import TMError
from .safetix import Device


async def json_body(request: Request, on_error: ErrorSpec) -> Any:
    raw = await request.body()
    if not raw:
        raise TMError(on_error, f"{on_error.message}: the body is empty")
    try:
        return json.loads(raw)
    except ValueError:
        raise TMError(on_error, f"{on_error.message}: the body is not JSON") from None


def _invalid(message: str) -> TMError:
    return TMError(assumed.INVALID_INPUT, f"{assumed.INVALID_INPUT.message}: {message}")


def _structure(message: str) -> TMError:
    return TMError(assumed.INVALID_RESERVE_STRUCTURE, f"{assumed.INVALID_RESERVE_STRUCTURE.message}: {message}")


def _seat(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise _invalid(f"{name} must be a seat number")
    return str(value).strip()


def _optional_text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(f"{name} must be a string")
    return value.strip() or None


# --- reserve --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TicketRequest:
    id: str
    quantity: int
    price_id: int | None


@dataclass(frozen=True)
class ReserveRequest:
    tickets: tuple[TicketRequest, ...]
    area_ids: tuple[int, ...]
    section: str | None
    row: str | None
    begin_seat: str | None
    end_seat: str | None
    accept_best_available: bool
    captcha_token: str | None

    @property
    def quantity(self) -> int:
        return sum(t.quantity for t in self.tickets)

    @property
    def price_id(self) -> int | None:
        return next((t.price_id for t in self.tickets if t.price_id is not None), None)


def reserve_request(body: Any) -> ReserveRequest:
    if not isinstance(body, dict) or not isinstance(body.get("reserve"), dict):
        raise _structure('the body must be {"reserve": {...}}')
    reserve: dict[str, Any] = body["reserve"]
    raw_tickets = reserve.get("tickets")
    if not isinstance(raw_tickets, list) or not raw_tickets or not all(isinstance(t, dict) for t in raw_tickets):
        raise _structure("reserve.tickets must be a non-empty list of objects")
    tickets: list[TicketRequest] = []
    for index, raw in enumerate(raw_tickets):
        ticket_id = raw.get("id")
        if not isinstance(ticket_id, str) or not ticket_id:
            raise _invalid(f"reserve.tickets[{index}].id must be a string (keep the leading zeros)")
        quantity = raw.get("quantity")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
            raise _invalid(f"reserve.tickets[{index}].quantity must be a positive integer")
        price = raw.get("price")
        price_id: int | None = None
        if price is not None:
            value = price.get("id") if isinstance(price, dict) else None
            if isinstance(value, bool) or not isinstance(value, int):
                raise _invalid(f"reserve.tickets[{index}].price.id must be an integer")
            price_id = value
        tickets.append(TicketRequest(ticket_id, quantity, price_id))
    prices = {t.price_id for t in tickets if t.price_id is not None}
    if len(prices) > 1:
        raise _invalid("all tickets of one reserve must use the same price level")
    areas = reserve.get("areas") or []
    if not isinstance(areas, list) or not all(isinstance(a, dict) and isinstance(a.get("id"), int) for a in areas):
        raise _invalid("reserve.areas must be a list of {id: integer}")
    best = reserve.get("accept_best_available", True)
    if not isinstance(best, bool):
        raise _invalid("reserve.accept_best_available must be true or false")
    token = reserve.get("token", body.get("token"))
    return ReserveRequest(
        tickets=tuple(tickets),
        area_ids=tuple(int(a["id"]) for a in areas),
        section=_optional_text(reserve, "section"),
        row=_optional_text(reserve, "row"),
        begin_seat=_seat(reserve.get("begin_seat"), "reserve.begin_seat"),
        end_seat=_seat(reserve.get("end_seat"), "reserve.end_seat"),
        accept_best_available=best,
        captcha_token=token if isinstance(token, str) else None,
    )


# --- payment --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentRequest:
    cart_id: str
    type: str
    first_name: str
    last_name: str
    email_address: str
    amount: Decimal
    currency: str
    card_number: str
    cin: str
    expire_month: int
    expire_year: int
    third_party_account_id: str


def _lookup(body: dict[str, Any], dotted: str) -> Any:
    value: Any = body
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def payment_cart_id(body: Any) -> str | None:
    """The cart a payment body names (seed 003: ``cartId``), for the concurrency check."""
    value = body.get("cartId") if isinstance(body, dict) else None
    return value if isinstance(value, str) and value else None


def payment_request(body: Any) -> PaymentRequest:
    if not isinstance(body, dict):
        raise _invalid("the body must be a JSON object")
    cart_id = payment_cart_id(body)
    if cart_id is None:
        raise _invalid("cartId is required")
    payment = body.get("payment")
    if not isinstance(payment, dict):
        raise _invalid("payment is required")
    missing = [name for name in assumed.REQUIRED_PAYMENT_FIELDS if not _present(_lookup(payment, name))]
    address = payment.get("address")
    if address is not None:
        if not isinstance(address, dict):
            raise _invalid("payment.address must be an object")
        missing += [f"address.{name}" for name in assumed.REQUIRED_ADDRESS_FIELDS if not _present(address.get(name))]
    if missing:
        raise _invalid("missing required payment fields: " + ", ".join(f"payment.{name}" for name in missing))
    texts = ("first_name", "last_name", "type", "email_address", "currency", "third_party_account_id")
    wrong = [name for name in texts if not isinstance(payment[name], str)]
    card = payment["card"]
    wrong += [f"card.{name}" for name in ("number", "cin") if not isinstance(card[name], str)]
    wrong += [f"card.{name}" for name in ("expire_month", "expire_year")
              if isinstance(card[name], bool) or not isinstance(card[name], int)]
    if wrong:
        raise _invalid("wrong type for payment fields: " + ", ".join(f"payment.{name}" for name in wrong))
    if payment["type"] not in assumed.PAYMENT_TYPES:
        raise _invalid(f"payment.type must be one of {list(assumed.PAYMENT_TYPES)}")
    raw_amount = payment["amount"]
    try:
        if isinstance(raw_amount, bool) or not isinstance(raw_amount, (str, int, float)):
            raise InvalidOperation
        amount = Decimal(str(raw_amount).strip())
        if not amount.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        raise _invalid("payment.amount must be a decimal amount like \"54.41\"") from None
    number = card["number"].strip()
    low, high = assumed.PLAIN_PAN_DIGITS
    if number.isdigit() and low <= len(number) <= high:
        raise _invalid("card data must be encrypted (a payment nonce), never a plain card number")
    if len(payment["third_party_account_id"]) > assumed.THIRD_PARTY_ID_MAX:
        raise _invalid(f"payment.third_party_account_id is limited to {assumed.THIRD_PARTY_ID_MAX} characters")
    return PaymentRequest(
        cart_id=cart_id, type=payment["type"], first_name=payment["first_name"], last_name=payment["last_name"],
        email_address=payment["email_address"], amount=amount, currency=payment["currency"], card_number=number,
        cin=card["cin"], expire_month=card["expire_month"], expire_year=card["expire_year"],
        third_party_account_id=payment["third_party_account_id"],
    )


# --- commit ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommitRequest:
    cart_id: str
    source_account_id: str | None


def commit_cart_id(body: Any) -> str | None:
    value = body.get("cart_id") if isinstance(body, dict) else None
    return value if isinstance(value, str) and value else None


def commit_request(body: Any) -> CommitRequest:
    cart_id = commit_cart_id(body)
    if cart_id is None:
        raise _structure("cart_id is required")
    assert isinstance(body, dict)
    source = body.get("source_account_id")
    if source is not None and not isinstance(source, str):
        raise _invalid("source_account_id must be a string")
    return CommitRequest(cart_id, source or None)


# --- order management -----------------------------------------------------------------------------


def device_request(body: Any) -> Device:
    if not isinstance(body, dict):
        raise _invalid("the body must be a JSON object")
    limits = {"device_id": assumed.DEVICE_ID_MAX, "device_type": assumed.DEVICE_TYPE_MAX,
              "device_os": assumed.DEVICE_OS_MAX, "third_party_account_id": assumed.THIRD_PARTY_ID_MAX}
    problems: list[str] = []
    for name, limit in limits.items():
        value = body.get(name)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{name} is required")
        elif len(value) > limit:
            problems.append(f"{name} is limited to {limit} characters")
    if not problems:
        if body["device_type"].lower() not in assumed.DEVICE_TYPES:
            problems.append(f"device_type must be one of {list(assumed.DEVICE_TYPES)}")
        if body["device_os"].lower() not in assumed.DEVICE_OSES:
            problems.append(f"device_os must be one of {list(assumed.DEVICE_OSES)}")
    if problems:
        raise _invalid("; ".join(problems))
    return Device(body["device_id"], body["device_type"], body["device_os"], body["third_party_account_id"])


# --- SecureRender ---------------------------------------------------------------------------------


class SecureRenderError(Exception):
    def __init__(self, code: int, error: str) -> None:
        super().__init__(error)
        self.code = code
        self.error = error

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "error": self.error}


@dataclass(frozen=True)
class SecureRenderRequest:
    user_id: str
    device_id: str
    device_type: str
    device_os: str
    user_agent: str | None
    tickets: tuple[dict[str, Any], ...]


def securerender_request(user_id: str | None, raw: bytes) -> SecureRenderRequest:
    if not user_id or not user_id.strip():
        raise SecureRenderError(400, "missing.x-user-id.header")
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise SecureRenderError(400, "invalid.request.body")
    for name in assumed.SR_REQUIRED_FIELDS:
        if not isinstance(body.get(name), str) or not body[name].strip():
            raise SecureRenderError(400, assumed.SR_MISSING_ATTRIBUTE.format(field=name))
    tickets = body.get("tickets")
    if not isinstance(tickets, list) or not tickets or not all(isinstance(t, dict) for t in tickets):
        raise SecureRenderError(400, assumed.SR_MISSING_ATTRIBUTE.format(field="tickets"))
    agent = body.get("userAgent")
    return SecureRenderRequest(user_id.strip(), body["deviceId"], body["deviceType"], body["deviceOs"],
                               agent if isinstance(agent, str) else None, tuple(tickets))
