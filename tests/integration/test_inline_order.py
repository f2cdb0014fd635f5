"""The order step that follows a recorded quote runs at once in the same thread
(ORDER_AFTER_QUOTE_INLINE, fulfilment/steps/runner.py), with the real steps, real Postgres and
the TBB sandbox over HTTP; if it cannot finish there, its message takes over."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from fulfilment.db import session_scope
from fulfilment.partners.base import Partner
from fulfilment.partners.registry import get_partner
from fulfilment.settings import Settings, get_settings
from fulfilment.steps import runner
from fulfilment.steps.common import Next, RetryLater
from fulfilment.steps.runner import StepName
from models import PurchaseTransition
from tests.support.factories import reload, stored_purchase
from tests.support.sandbox import Sandbox

Sent = list[tuple[Next, uuid.UUID]]


@pytest.fixture
def tbb(configured: dict[str, str], clean_sandbox: Sandbox) -> Partner:
    return get_partner()


def settings(inline: bool) -> Settings:
    return get_settings().model_copy(update={"order_after_quote_inline": inline})


def quote_step(purchase_id: uuid.UUID, partner: Partner, inline: bool) -> Sent:
    sent: Sent = []
    runner.run_step(StepName.QUOTE, purchase_id, partner=partner, settings=settings(inline), message_id="quote-msg",
                    send=lambda following, pid: sent.append((following, pid)))
    return sent


def path(purchase_id: uuid.UUID) -> list[tuple[str, str | None]]:
    with session_scope() as session:
        return [(t.to_state, t.message_id) for t in session.scalars(
            select(PurchaseTransition).where(PurchaseTransition.purchase_id == purchase_id)
            .order_by(PurchaseTransition.id))]


def test_the_order_is_placed_in_line_after_the_quote(tbb: Partner) -> None:
    purchase_id = stored_purchase()
    assert quote_step(purchase_id, tbb, inline=True) == []  # nothing left to send
    assert reload(purchase_id).state == "awaiting_transfer"
    assert path(purchase_id)[1:] == [("quoted", "quote-msg"), ("ordering", "quote-msg"),
                                     ("awaiting_transfer", "quote-msg")]


def test_without_the_setting_the_order_step_is_sent_as_a_message(tbb: Partner) -> None:
    purchase_id = stored_purchase()
    assert quote_step(purchase_id, tbb, inline=False) == [(Next("place_order"), purchase_id)]
    assert reload(purchase_id).state == "quoted"


def test_a_step_that_fails_in_line_is_handed_to_its_message(tbb: Partner, monkeypatch: pytest.MonkeyPatch) -> None:
    def database_gone(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("the database went away")

    purchase_id = stored_purchase()
    monkeypatch.setitem(runner.STEPS, StepName.ORDER, database_gone)
    assert quote_step(purchase_id, tbb, inline=True) == [(Next("place_order"), purchase_id)]
    assert reload(purchase_id).state == "quoted"


def test_a_transient_failure_in_line_sends_the_step_after_the_retry_delay(
    tbb: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def partner_busy(*args: Any, **kwargs: Any) -> None:
        raise RetryLater(RuntimeError("429"), retry_after=7.0)

    purchase_id = stored_purchase()
    monkeypatch.setitem(runner.STEPS, StepName.ORDER, partner_busy)
    bounded = min(7.0, get_settings().actor_max_backoff_ms / 1000)  # never more than our maximum backoff
    assert quote_step(purchase_id, tbb, inline=True) == [(Next("place_order", bounded), purchase_id)]
