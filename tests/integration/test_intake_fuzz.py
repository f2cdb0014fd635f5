"""Hostile input, fuzzed: whatever arrives, intake stores a purchase or records a specific reason.

Never any other exception (which would send a poison message round the retry loop),
never a purchase from an invalid request.
"""

from __future__ import annotations

import datetime as dt
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from fulfilment.db import session_scope
from fulfilment.requests import PurchaseRequest, purchase_id_for
from fulfilment.settings import get_settings
from fulfilment.steps import intake
from models import Purchase, RejectedRequest
from tests.support.factories import request

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["request_id", "event_id", "section_name", "row_name", "quantity", "delivery_type", "delivery_deadline",
          "max_unit_price", "metadata"]
field_values = st.one_of(
    json_values,
    st.integers(min_value=-10**12, max_value=10**12),
    st.sampled_from(["mobile_transfer", "mobile_qr", "pdf", "MOBILE_TRANSFER", "fax", ""]),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)).map(lambda d: d.isoformat()),
    st.text(min_size=1000, max_size=5000),
)


@st.composite
def mutated_requests(draw: st.DrawFn) -> object:
    body = request()
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        if draw(st.booleans()):
            body[name] = draw(field_values)
        else:
            body.pop(name, None)
    if draw(st.booleans()):
        body[draw(st.text(min_size=1, max_size=20))] = draw(json_values)
    return draw(st.one_of(st.just(body), json_values)) if draw(st.integers(0, 9)) == 0 else body


def is_valid(raw: object) -> bool:
    try:
        PurchaseRequest.model_validate(raw)
    except Exception:  # noqa: BLE001
        return False
    return True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=mutated_requests())
def test_any_body_is_stored_or_rejected_with_a_reason(raw: object) -> None:
    valid = is_valid(raw)
    try:
        stored = intake.accept(raw, settings=get_settings())
    except intake.InvalidPurchaseRequest as error:
        assert not valid or error.code == "REQUEST_ID_CONFLICT"
        assert error.reason
        request_id = raw.get("request_id") if isinstance(raw, dict) else None
        query = select(RejectedRequest.reason).order_by(RejectedRequest.id.desc()).limit(1)
        if request_id is not None:  # stored as it can be: NUL escaped, cut to the column's size
            query = query.where(RejectedRequest.request_id == intake._storable(str(request_id))[:200])
        with session_scope() as session:
            reasons = session.scalars(query).all()
        assert intake._storable(error.reason)[:4000] in reasons
        if isinstance(raw, dict) and isinstance(raw.get("request_id"), str) and "\x00" not in raw["request_id"] \
                and not valid:
            with session_scope() as session:
                assert session.get(Purchase, purchase_id_for(raw["request_id"])) is None
        return
    assert valid, f"an invalid request was accepted: {json.dumps(raw, default=str)[:300]}"
    assert stored is not None
