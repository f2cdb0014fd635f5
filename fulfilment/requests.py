"""The purchase request other services send, validated strictly.

This model is the contract for publishers: `docs/schemas/purchase-request.schema.json`
is generated from it (`fulfil schema`) and checked by a test to stay identical.
Unknown fields are rejected rather than ignored, so a typo never goes unnoticed.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
)

# Purchase ids are derived from request ids, so a caller knows its purchase id at
# submit time and a re-submission names the same purchase (invariant 5).
PURCHASE_NAMESPACE = uuid.UUID("6f1c3c52-6a53-4cf4-9a6e-8f0b1f6d2a10")

MAX_METADATA_BYTES = 8_192


class DeliveryType(StrEnum):
    MOBILE_TRANSFER = "mobile_transfer"
    MOBILE_QR = "mobile_qr"
    PDF = "pdf"


Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]+$")]


class _Request(BaseModel):
    """What every purchase request carries, whatever its partner."""

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True, str_strip_whitespace=True)

    request_id: Annotated[
        str,
        Field(
            min_length=1,
            max_length=200,
            pattern=r"^[A-Za-z0-9._:\-]+$",
            description="The caller's idempotency key: the same request_id never makes a second purchase.",
        ),
    ]
    quantity: Annotated[int, Field(ge=1, le=50, strict=True)]
    delivery_deadline: dt.datetime = Field(description="UTC, with an explicit offset (e.g. 2026-09-12T18:00:00Z).")
    metadata: dict[str, Any] | None = Field(default=None, description="Opaque to us; echoed in events. No PII.")

    @field_validator("delivery_deadline")
    @classmethod
    def _aware_utc(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("must carry a timezone (UTC, e.g. ...Z); naive datetimes are ambiguous")
        if value <= dt.datetime.now(dt.UTC):
            raise ValueError("is in the past")
        return value.astimezone(dt.UTC)

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                encoded = json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise ValueError("must be plain JSON (no NaN or Infinity)") from None
            if len(encoded) > MAX_METADATA_BYTES:
                raise ValueError(f"is larger than {MAX_METADATA_BYTES} bytes once encoded")
            if "\\u0000" in encoded:
                raise ValueError("must not contain NUL characters (Postgres cannot store them)")
        return value

    @property
    def purchase_id(self) -> uuid.UUID:
        return purchase_id_for(self.request_id)


class PurchaseRequest(_Request):
    """A purchase through Ticket Buyback (`partner` "tbb", the default when absent)."""

    partner: Literal["tbb"] = Field(default="tbb", description="Omit, or \"tbb\": Ticket Buyback.")
    event_id: Name
    section_name: Name
    row_name: Name | None = Field(default=None, description="Omit to let the partner pick the best available row.")
    delivery_type: DeliveryType
    max_unit_price: Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=2)] | None = None


Ident = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:\-]+$")]


class FanDevice(BaseModel):
    """The fan's device/app install, as seed 003's FAQ asks: unique per install, never per order or
    per server.  Sent with order management and SafeTix refreshes."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    device_id: Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[^\x00-\x1f]+$")]
    device_type: Literal["web", "native"]
    device_os: Literal["ios", "android", "other"]


class TicketmasterRequest(_Request):
    """A purchase through the Ticketmaster Partner API; the tickets come back in events.

    No customer data: billing identity and payment method are the operator's (settings).
    """

    partner: Literal["ticketmaster"]
    event_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9]+$",
                                   description="The TM event id, e.g. 000051048D991EE7.")]
    ticket_type_id: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9]+$", strict=True,
                                         description="The TM ticket type id, a string: leading zeros matter.")]
    price_level_id: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9]+$", strict=True)] | None = (
        Field(default=None, description="The TM price level id, as a string; omit for any.")
    )
    section_name: Name | None = Field(default=None, description="Omit for the best available section.")
    row_name: Name | None = Field(default=None, description="Omit for the best available row (needs section_name).")
    max_unit_price: Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=2)] = Field(
        description="The most to pay per ticket, all in: TM's cart total (fees, taxes) / quantity.")
    event_start: dt.datetime | None = Field(
        default=None, description="The event's start (with offset), if TM's event details may not give it.")
    third_party_account_id: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]+$",
                                                 description="The buyer's opaque user id at the requesting "
                                                 "service: TM binds the SafeTix tickets to it.")]
    event_timezone: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="The event's IANA time zone (e.g. America/Los_Angeles). With event_start, the "
        "purchase makes no event-details call (deprecated at TM).")
    device: FanDevice | None = Field(
        default=None, description="The fan's device (seed 003: per device/app install); omit to use the server's "
        "TM_DEVICE_ID (a fallback: TM may refuse one id for many fans).")
    payment_nonce: Annotated[SecretStr, Field(min_length=1, max_length=4096)] | None = Field(
        default=None, description="A Braintree payment-method nonce for this purchase only (it pays once). "
        "Required when the worker runs with TM_PAYMENT_SOURCE=request. Sealed at rest, never logged or echoed.")

    @field_validator("event_timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError("is not an IANA time zone name (e.g. America/New_York)") from None
        return value

    @field_validator("event_start")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise ValueError("must carry a timezone offset")
        return None if value is None else value.astimezone(dt.UTC)

    @field_validator("row_name")
    @classmethod
    def _row_needs_section(cls, value: str | None, info: Any) -> str | None:
        if value is not None and info.data.get("section_name") is None:
            raise ValueError("a row needs a section_name")
        return value


PARTNERS = ("tbb", "ticketmaster")


def _partner_of(value: Any) -> str | None:
    raw = value.get("partner", "tbb") if isinstance(value, dict) else getattr(value, "partner", "tbb")
    return raw if raw in PARTNERS else None


AnyPurchaseRequest = PurchaseRequest | TicketmasterRequest
_ANY: TypeAdapter[AnyPurchaseRequest] = TypeAdapter(
    Annotated[
        Annotated[PurchaseRequest, Tag("tbb")] | Annotated[TicketmasterRequest, Tag("ticketmaster")],
        Discriminator(_partner_of, custom_error_type="unknown_partner",
                      custom_error_message=f"partner must be one of {', '.join(PARTNERS)} (absent: tbb)"),
    ]
)


# The request shapes of partners registered at run time (partners/registry.py: a partner's own
# PartnerSpec.request, e.g. one named by FULFIL_EXTRA_PARTNERS), by partner name.
_REGISTERED: dict[str, type[PurchaseRequest]] = {}


def register_request(partner: str, shape: type[PurchaseRequest]) -> None:
    if partner in PARTNERS:
        raise ValueError(f"partner {partner!r} has its request shape here already")
    _REGISTERED[partner] = shape


def registered_partners() -> tuple[str, ...]:
    """The partners registered at run time (their request shapes): enabled wherever they are registered."""
    return tuple(_REGISTERED)


def parse_request(raw: Any) -> AnyPurchaseRequest:
    """Validate a request of any partner (`partner` chooses; absent: tbb).  Raises ValidationError."""
    partner = raw.get("partner") if isinstance(raw, dict) else None
    shape = _REGISTERED.get(partner) if isinstance(partner, str) else None
    if shape is not None:
        return shape.model_validate(raw)
    return _ANY.validate_python(raw)


def request_schema() -> dict[str, Any]:
    """The JSON Schema of a purchase request (docs/schemas/purchase-request.schema.json)."""
    return _ANY.json_schema()


def purchase_id_for(request_id: str) -> uuid.UUID:
    return uuid.uuid5(PURCHASE_NAMESPACE, request_id)


# Request fields that are secrets: never stored in clear (rejections keep "***"), never logged.
SECRET_FIELDS = ("payment_nonce",)
# Where a TM purchase keeps its request's nonce (sealed, ticket_crypto), and the mark left once a
# payment used it (partners/ticketmaster/payment.py).
SEALED_NONCE = "payment_nonce"
NONCE_USED = "payment_nonce_used"


def redacted(raw: Any) -> Any:
    """`raw` without the clear value of a secret field (for rejected_requests and logs)."""
    if isinstance(raw, dict) and any(name in raw for name in SECRET_FIELDS):
        return {key: ("***" if key in SECRET_FIELDS else value) for key, value in raw.items()}
    return raw


def explain(error: ValidationError) -> str:
    """One line per problem, naming the field: what the sender needs to fix."""
    parts = []
    for item in error.errors(include_url=False):
        loc = list(item["loc"])
        if len(loc) > 1 and loc[0] in PARTNERS:
            loc = loc[1:]  # the union's tag: the partner the request chose
        if item["type"] == "unknown_partner":
            loc = ["partner"]
        field = ".".join(str(p) for p in loc) or "(body)"
        message = "unknown field" if item["type"] == "extra_forbidden" else item["msg"]
        parts.append(f"{field}: {message}")
    return "; ".join(parts)
