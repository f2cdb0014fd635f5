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
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# Purchase ids are derived from request ids, so a caller knows its purchase id at
# submit time and a re-submission names the same purchase (invariant 5).
PURCHASE_NAMESPACE = uuid.UUID("6f1c3c52-6a53-4cf4-9a6e-8f0b1f6d2a10")

MAX_METADATA_BYTES = 8_192


class DeliveryType(StrEnum):
    MOBILE_TRANSFER = "mobile_transfer"
    MOBILE_QR = "mobile_qr"
    PDF = "pdf"


Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]+$")]


class PurchaseRequest(BaseModel):
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
    event_id: Name
    section_name: Name
    row_name: Name | None = Field(default=None, description="Omit to let the partner pick the best available row.")
    quantity: Annotated[int, Field(ge=1, le=50, strict=True)]
    delivery_type: DeliveryType
    delivery_deadline: dt.datetime = Field(description="UTC, with an explicit offset (e.g. 2026-09-12T18:00:00Z).")
    max_unit_price: Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=2)] | None = None
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


def purchase_id_for(request_id: str) -> uuid.UUID:
    return uuid.uuid5(PURCHASE_NAMESPACE, request_id)


def explain(error: ValidationError) -> str:
    """One line per problem, naming the field: what the sender needs to fix."""
    parts = []
    for item in error.errors(include_url=False):
        field = ".".join(str(p) for p in item["loc"]) or "(body)"
        message = "unknown field" if item["type"] == "extra_forbidden" else item["msg"]
        parts.append(f"{field}: {message}")
    return "; ".join(parts)
