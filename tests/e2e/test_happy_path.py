"""A batch of purchases through real workers, the scheduler and the sandbox over HTTP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from fulfilment.db import session_scope
from models import OutboxEvent, PurchaseTransition
from tests.support.factories import request
from tests.support.pipeline import Pipeline, in_states, start_pipeline, wait_until
from tests.support.sandbox import Sandbox
from tests.support.servers import REPO


@pytest.fixture(scope="module")
def pipeline(app_env: dict[str, str], log_dir: Path) -> Iterator[Pipeline]:
    running = start_pipeline(app_env, log_dir, name="happy")
    yield running
    running.stop()


def test_a_batch_reaches_awaiting_transfer_then_transfer_complete(pipeline: Pipeline, clean_sandbox: Sandbox) -> None:
    sections = ["101", "102", "201"]
    bodies = [request(section_name=sections[i % 3], quantity=1 + i % 3, row_name="A" if i % 2 else None)
              for i in range(12)]
    ids = [pipeline.submit(body) for body in bodies]

    awaiting = wait_until(ids, in_states("awaiting_transfer", "transfer_complete"), pipeline=pipeline)
    completed = wait_until(ids, in_states("transfer_complete"), pipeline=pipeline)

    for body, purchase_id in zip(bodies, ids, strict=True):
        purchase = completed[purchase_id]
        assert purchase.order_id and purchase.transfer_email and purchase.transfer_email.endswith("@ticketbuyback.com")
        assert purchase.seat_range and purchase.unit_price and purchase.unit_price > 0
        assert purchase.subtotal == purchase.unit_price * body["quantity"]
        assert purchase.order_status == "transfer_complete"
        assert awaiting[purchase_id].order_id == purchase.order_id
        # The sandbox has exactly this one order for the purchase's quote, with the same facts.
        [order] = clean_sandbox.orders(quote_id=purchase.quote_id)
        assert order["order_id"] == purchase.order_id
        assert order["delivery"]["transfer_email"] == purchase.transfer_email
        assert order["seats"]["seat_range"] == purchase.seat_range
        assert Decimal(str(order["pricing"]["unit_price"])) == purchase.unit_price

    with session_scope() as session:
        for purchase_id in ids:
            entries = list(session.scalars(
                select(PurchaseTransition).where(PurchaseTransition.purchase_id == purchase_id)
                .order_by(PurchaseTransition.id)))
            path = [t.to_state for t in entries]
            assert path == ["received", "quoted", "ordering", "awaiting_transfer", "transfer_complete"]
            # Quoted and ordered in line by the intake worker that stored the purchase, under the
            # intake message (QUOTE_AFTER_INTAKE_INLINE, ORDER_AFTER_QUOTE_INLINE): no
            # quote_purchase or place_order message.
            received, quoted, ordering, awaiting = entries[0:4]
            assert received.message_id and received.message_id == quoted.message_id == ordering.message_id \
                == awaiting.message_id
            events = session.scalars(select(OutboxEvent).where(OutboxEvent.purchase_id == purchase_id)).all()
            assert sorted(e.routing_key for e in events) == sorted(f"purchase.{s}" for s in path)
            final = next(e for e in events if e.routing_key == "purchase.transfer_complete")
            assert final.payload["order"]["transfer_email"] == completed[purchase_id].transfer_email


def test_status_and_list_commands_show_the_purchase(pipeline: Pipeline, clean_sandbox: Sandbox) -> None:
    body = request()
    purchase_id = pipeline.submit(body)
    wait_until([purchase_id], in_states("transfer_complete"), pipeline=pipeline)
    shown = subprocess.run([sys.executable, "-m", "fulfilment.cli", "status", body["request_id"]],
                           cwd=REPO, env=pipeline.env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    purchase = wait_until([purchase_id], in_states("transfer_complete"))[purchase_id]
    for expected in (str(purchase_id), "transfer_complete", purchase.order_id, purchase.transfer_email,
                     purchase.seat_range, "ordering -> awaiting_transfer"):
        assert expected in shown.stdout
    listed = subprocess.run([sys.executable, "-m", "fulfilment.cli", "list", "--state", "transfer_complete"],
                            cwd=REPO, env=pipeline.env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and str(purchase_id) in listed.stdout


def test_log_lines_about_a_purchase_carry_its_ids(pipeline: Pipeline, clean_sandbox: Sandbox) -> None:
    import json

    body = request()
    purchase_id = pipeline.submit(body)
    wait_until([purchase_id], in_states("transfer_complete"), pipeline=pipeline)
    lines = [json.loads(line) for line in pipeline.workers.log_path.read_text().splitlines()
             if line.startswith("{") and str(purchase_id) in line]
    transitions = [entry for entry in lines if entry["message"].startswith(f"purchase {purchase_id}:")]
    assert len(transitions) >= 4  # received, quoted, ordering, awaiting_transfer, ... as JSON lines
    for entry in transitions:
        assert entry["purchase_id"] == str(purchase_id)
        assert entry["request_id"] == body["request_id"]
        assert entry["message_id"]
