"""The purchase request model: what is accepted, what is refused and why."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from fulfilment.cli import request_schema
from fulfilment.requests import PurchaseRequest, explain, purchase_id_for

REPO = Path(__file__).resolve().parents[2]
FUTURE = (dt.datetime.now(dt.UTC) + dt.timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%SZ")


def body(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {"request_id": "req-1", "event_id": "5496123", "section_name": "101", "quantity": 2,
                               "delivery_type": "mobile_transfer", "delivery_deadline": FUTURE}
    base.update(overrides)
    return base


def reasons(raw: dict[str, object]) -> str:
    with pytest.raises(ValidationError) as raised:
        PurchaseRequest.model_validate(raw)
    return explain(raised.value)


def test_a_full_request_is_accepted_and_normalised_to_utc() -> None:
    request = PurchaseRequest.model_validate(body(row_name="A", max_unit_price="200.50", metadata={"order": 7},
                                                  delivery_deadline="2030-05-01T20:00:00+02:00"))
    assert request.delivery_deadline == dt.datetime(2030, 5, 1, 18, tzinfo=dt.UTC)
    assert request.max_unit_price == Decimal("200.50")
    assert request.purchase_id == purchase_id_for("req-1")


def test_purchase_ids_are_stable_per_request_id() -> None:
    assert purchase_id_for("a") == purchase_id_for("a") != purchase_id_for("b")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"quantity": 0}, "quantity: Input should be greater than or equal to 1"),
        ({"quantity": 2.5}, "quantity"),
        ({"quantity": True}, "quantity"),
        ({"quantity": 10_000}, "quantity: Input should be less than or equal to 50"),
        ({"delivery_type": "fax"}, "delivery_type"),
        ({"delivery_deadline": "2030-01-01T10:00:00"}, "naive datetimes are ambiguous"),
        ({"delivery_deadline": "2000-01-01T10:00:00Z"}, "is in the past"),
        ({"delivery_deadline": "tomorrow"}, "delivery_deadline"),
        ({"max_unit_price": 0}, "max_unit_price"),
        ({"max_unit_price": "1.234"}, "max_unit_price"),
        ({"request_id": "has spaces"}, "request_id"),
        ({"request_id": ""}, "request_id"),
        ({"event_id": "x" * 101}, "event_id"),
        ({"section_name": "a\x00b"}, "section_name"),
        ({"customer_email": "a@b.c"}, "customer_email: unknown field"),
        ({"metadata": {"blob": "x" * 10_000}}, "metadata"),
    ],
)
def test_bad_fields_are_named(overrides: dict[str, object], expected: str) -> None:
    assert expected in reasons(body(**overrides))


def test_missing_fields_are_all_named() -> None:
    message = reasons({"request_id": "r"})
    for field in ("event_id", "section_name", "quantity", "delivery_type", "delivery_deadline"):
        assert f"{field}: Field required" in message


def test_published_json_schema_matches_the_model() -> None:
    published = json.loads((REPO / "docs" / "schemas" / "purchase-request.schema.json").read_text())
    assert published == request_schema(), "run `fulfil schema > docs/schemas/purchase-request.schema.json`"


def test_the_documented_example_is_a_valid_request() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    example = json.loads((REPO / "docs" / "examples" / "purchase-request.message.json").read_text())
    assert example["queue_name"] == "purchases.intake" and example["actor_name"] == "submit_purchase"
    request = example["args"][0]
    jsonschema.validate(request, request_schema())
    # The example's deadline is fixed in the past of some future reader; check shape, not time.
    PurchaseRequest.model_validate({**request, "delivery_deadline": FUTURE})
