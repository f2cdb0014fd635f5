"""README "Adding a partner", followed: a third, toy partner (tests/support/toy_partner/, one folder)
registered from tests only (FULFIL_EXTRA_PARTNERS, its one registration line), end to end through the
real runner: real worker processes, real Postgres and RabbitMQ, the purchase submitted over AMQP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from fulfilment import requests
from fulfilment.db import session_scope
from fulfilment.partners.registry import EXTRA_PARTNERS_ENV, partner_specs
from models import PurchaseTransition
from tests.support.factories import request
from tests.support.pipeline import Pipeline, in_states, start_pipeline, wait_until
from tests.support.toy_partner.partner import UNIT_PRICE

TOY = "tests.support.toy_partner"


@pytest.fixture(scope="module")
def pipeline(app_env: dict[str, str], log_dir: Path) -> Iterator[Pipeline]:
    running = start_pipeline({**app_env, EXTRA_PARTNERS_ENV: TOY}, log_dir, processes=1, threads=2, name="toy")
    yield running
    running.stop()


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process submits toy requests too: it registers the toy partner the way the workers do."""
    monkeypatch.setattr(requests, "_REGISTERED", {})  # forgotten again after the test
    with pytest.raises(ValidationError, match="partner must be one of"):
        requests.parse_request(request(partner="toy"))  # unknown without its registration line
    monkeypatch.setenv(EXTRA_PARTNERS_ENV, TOY)
    assert "toy" in [spec.name for spec in partner_specs()]


def test_a_third_partner_registered_from_tests_goes_end_to_end(pipeline: Pipeline, registered: None) -> None:
    bodies = [request(partner="toy", quantity=quantity) for quantity in (1, 3)]
    ids = [pipeline.submit(body) for body in bodies]

    done = wait_until(ids, in_states("transfer_complete"), pipeline=pipeline)

    with session_scope() as session:
        for body, purchase_id in zip(bodies, ids, strict=True):
            purchase = done[purchase_id]
            assert purchase.partner == "toy"
            assert purchase.quote_id == f"TOYQ-{purchase_id}" and purchase.order_id == f"TOYO-{purchase_id}"
            assert purchase.unit_price == UNIT_PRICE and purchase.subtotal == UNIT_PRICE * body["quantity"]
            path = list(session.scalars(select(PurchaseTransition.to_state).where(
                PurchaseTransition.purchase_id == purchase_id).order_by(PurchaseTransition.id)))
            # The core's steps around the toy's flow: the intent (ordering) committed before its order.
            assert path == ["received", "quoted", "ordering", "awaiting_transfer", "transfer_complete"]
