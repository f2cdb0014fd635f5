"""Intake: validate a purchase request and store it once per request_id (invariant 5)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from typing import Any, NoReturn

from pydantic import SecretStr, ValidationError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from fulfilment import logging_setup, metrics, state_machine, ticket_crypto
from fulfilment.db import autocommit, session_scope
from fulfilment.requests import (
    NONCE_USED,
    SEALED_NONCE,
    AnyPurchaseRequest,
    PurchaseRequest,
    TicketmasterRequest,
    explain,
    parse_request,
    redacted,
    registered_partners,
)
from fulfilment.settings import Settings
from fulfilment.state_machine import State
from models import OutboxEvent, Purchase, RejectedRequest

log = logging.getLogger(__name__)

RAW_BODY_LIMIT = 4_000
# The event a rejection publishes on the events exchange (fulfilment/rabbitmq/outbox.py), for the sender.
REQUEST_REJECTED = "request.rejected"


class InvalidPurchaseRequest(Exception):
    """The request can never succeed as sent; it is recorded and not retried."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def accept(raw: Any, *, settings: Settings, message_id: str | None = None) -> uuid.UUID | None:
    """Store the purchase; return its id if it is new, None if request_id was seen before.

    Raises InvalidPurchaseRequest (after recording it in rejected_requests) for bad input.
    """
    created = receive(raw, settings=settings, message_id=message_id)
    return None if created is None else created.id


def receive(raw: Any, *, settings: Settings, message_id: str | None = None,
            hold_claim_for: float | None = None) -> Purchase | None:
    """`accept`, returning the new purchase; `hold_claim_for`: born claimed, for the caller to
    quote at once (state_machine.create)."""
    if not isinstance(raw, dict):
        _reject(raw, message_id, "INVALID_REQUEST", f"the request must be a JSON object, not {type(raw).__name__}")
    try:
        request = parse_request(raw)
    except ValidationError as error:
        _reject(raw, message_id, "INVALID_REQUEST", explain(error))
    enabled = (*settings.enabled_partners, *registered_partners())
    if request.partner not in enabled:
        _reject(raw, message_id, "PARTNER_NOT_ENABLED",
                f"partner {request.partner!r} is not enabled here (enabled: {', '.join(enabled)})")

    if (isinstance(request, TicketmasterRequest) and request.payment_nonce is None
            and settings.tm_payment_source == "request"):
        _reject(raw, message_id, "PAYMENT_NONCE_REQUIRED",
                "payment_nonce: required here (TM_PAYMENT_SOURCE=request): a Braintree nonce minted for this purchase")

    logging_setup.bind(purchase_id=request.purchase_id)  # the rest of this message's log lines name it
    columns = purchase_columns(request, ticket_key=settings.ticket_key)
    with autocommit() as db:
        created = state_machine.create(db, {"id": request.purchase_id, **columns},
                                       next_action_in=settings.redrive_after_seconds, reason="request accepted",
                                       message_id=message_id, hold_claim_for=hold_claim_for)
    if created is not None:
        return created
    with session_scope() as session:
        existing = session.scalars(select(Purchase).where(Purchase.request_id == request.request_id)).one()

    differences = _differences(existing, columns)
    if differences:
        # Same key, different content: keep the first purchase, and say so loudly.
        _reject(
            raw,
            message_id,
            "REQUEST_ID_CONFLICT",
            f"request_id {request.request_id!r} was already used for purchase {existing.id} "
            f"with different {', '.join(differences)}; the first request stands",
            purchase_id=existing.id,
        )
    log.info("duplicate request_id %s: purchase %s already exists", request.request_id, existing.id)
    if isinstance(request, TicketmasterRequest) and request.payment_nonce is not None:
        _take_new_nonce(existing.id, request.payment_nonce, settings)
    return None


def _take_new_nonce(purchase_id: uuid.UUID, nonce: SecretStr, settings: Settings) -> None:
    """The same request sent again with a fresh payment_nonce: if the purchase's own nonce was used by
    a payment whose cart was not bought (a nonce pays once), the new one is kept (sealed) and a
    purchase paused for it goes on now.  Only while no worker holds it (a claim reads it afresh)."""
    with session_scope() as session:
        current = session.get(Purchase, purchase_id, with_for_update=True)
        data = dict(current.partner_data or {}) if current is not None else {}
        if current is None or not data.get(NONCE_USED) or data.get(SEALED_NONCE) or State(current.state) not in (
                State.RECEIVED, State.PAUSED):
            return
        if current.claimed_until is not None and current.claimed_until > dt.datetime.now(dt.UTC):
            log.info("purchase %s: a new payment nonce came while a worker holds it; not taken, send it again",
                     purchase_id)
            return
        data.pop(NONCE_USED, None)
        current.partner_data = {**data, SEALED_NONCE: _seal(nonce, settings.ticket_key)}
        current.next_action_at = dt.datetime.now(dt.UTC)
    log.info("purchase %s: a new payment nonce from the requester replaces the used one", purchase_id)


# How a purchase of a partner that issues tickets is delivered (purchases.delivery_type).
TICKETS_DELIVERY = "tickets"


def purchase_columns(request: AnyPurchaseRequest, *, ticket_key: SecretStr | None = None) -> dict[str, Any]:
    """The purchase's columns for a valid request (`partner_data`: what only its partner needs; a
    payment nonce sealed with `ticket_key`, never in clear)."""
    columns: dict[str, Any] = {
        "request_id": request.request_id,
        "partner": request.partner,
        "event_id": request.event_id,
        "section_name": request.section_name,
        "row_name": request.row_name,
        "quantity": request.quantity,
        "delivery_deadline": request.delivery_deadline,
        "max_unit_price": request.max_unit_price,
        "request_metadata": request.metadata,
    }
    if isinstance(request, PurchaseRequest):
        return {**columns, "delivery_type": request.delivery_type.value}
    return {**columns, "delivery_type": TICKETS_DELIVERY, "partner_data": {
        "delivery": "tickets",
        "ticket_type_id": request.ticket_type_id,
        "price_level_id": request.price_level_id,
        "third_party_account_id": request.third_party_account_id,
        "event_start": request.event_start.isoformat() if request.event_start else None,
        "event_timezone": request.event_timezone,
        "device": request.device.model_dump() if request.device else None,
        **({"payment_nonce": _seal(request.payment_nonce, ticket_key)} if request.payment_nonce else {}),
    }}


def _seal(nonce: SecretStr, key: SecretStr | None) -> str:
    if key is None:
        raise RuntimeError("TICKET_KEY is required to keep a payment nonce at rest")
    return ticket_crypto.encrypt(key, nonce)


# Compared when a request_id comes again (the nonce is not: a retry may carry a fresh one).
_REQUEST_DATA = ("delivery", "ticket_type_id", "price_level_id", "third_party_account_id", "event_start",
                 "event_timezone", "device")


def _differences(existing: Purchase, columns: dict[str, Any]) -> list[str]:
    """The request's fields that differ from the purchase that holds its request_id."""
    names = [name for name in columns if name not in ("request_id", "request_metadata", "partner_data")
             and getattr(existing, name) != columns[name]]
    stored, sent = existing.partner_data or {}, columns.get("partner_data") or {}
    names += [name for name in _REQUEST_DATA if stored.get(name) != sent.get(name)]
    return names


def _reject(raw: Any, message_id: str | None, code: str, reason: str, *,
            purchase_id: uuid.UUID | None = None) -> NoReturn:
    """Record the rejection and its `request.rejected` event (one transaction), then raise.

    The event tells the sender why (request_id, code, reason; never the raw body); for
    REQUEST_ID_CONFLICT it names the purchase that stands.
    """
    raw_request_id = raw.get("request_id") if isinstance(raw, dict) else None
    request_id = _storable(str(raw_request_id))[:200] if raw_request_id is not None else None
    stored_reason = _storable(reason)[:4000]
    try:
        body = json.dumps(redacted(raw), default=str)
    except (TypeError, ValueError):
        body = repr(redacted(raw))
    with session_scope() as session:
        rejected = session.execute(
            insert(RejectedRequest)
            .values(request_id=request_id, message_id=message_id, reason_code=code, reason=stored_reason,
                    raw_body=_storable(body)[:RAW_BODY_LIMIT])
            .returning(RejectedRequest.id, RejectedRequest.created_at)
        ).one()
        event_id = uuid.uuid4()
        session.execute(
            insert(OutboxEvent).values(
                id=event_id, rejection_id=rejected.id, routing_key=REQUEST_REJECTED,
                payload=rejection_payload(event_id, rejection_id=rejected.id, rejected_at=rejected.created_at,
                                          request_id=request_id, purchase_id=purchase_id, code=code,
                                          reason=stored_reason, message_id=message_id),
            )
        )
    metrics.REJECTED_REQUESTS.labels(code).inc()
    log.warning("purchase request rejected: %s: %s", code, reason)
    raise InvalidPurchaseRequest(code, reason)


def rejection_payload(
    event_id: uuid.UUID, *, rejection_id: int, rejected_at: dt.datetime, request_id: str | None,
    purchase_id: uuid.UUID | None, code: str, reason: str, message_id: str | None,
) -> dict[str, Any]:
    """The `request.rejected` event body (schema: docs/schemas/request-rejected.schema.json)."""
    at = rejected_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return {
        "event_id": str(event_id),
        "type": REQUEST_REJECTED,
        "occurred_at": at,
        "rejection_id": rejection_id,
        "request_id": request_id,
        "purchase_id": str(purchase_id) if purchase_id else None,
        "reason_code": code,
        "reason": reason,
        "rejected_at": at,
        "message_id": message_id,
    }


def _storable(text: str) -> str:
    """Postgres text cannot hold NUL; hostile input must still be recorded, so escape it."""
    return text.replace("\x00", "\\x00")
