"""`fulfil cancel`, `fulfil resolve` and `fulfil rejected` against real Postgres and the TBB sandbox.

The commands run in-process (typer's CliRunner) with the test environment; the work is done by
fulfilment/operator/, which the web console calls too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import jsonschema
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from fulfilment import state_machine
from fulfilment.cli import app
from fulfilment.cli.common import EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE
from fulfilment.db import session_scope
from fulfilment.operator import CANCELLED_BY_OPERATOR, rejected_requests
from fulfilment.partners.base import Order, order_details
from fulfilment.partners.registry import get_partner, get_partners
from fulfilment.settings import get_settings
from fulfilment.state_machine import State
from fulfilment.steps import intake, quote
from models import OrphanOrder, OutboxEvent, Purchase, PurchaseTransition
from tests.support import servers
from tests.support.factories import reload, request, stored_purchase
from tests.support.sandbox import Sandbox
from tests.support.servers import REPO, free_port

EVENT_SCHEMA = json.loads((REPO / "docs" / "schemas" / "purchase-event.schema.json").read_text())


def fulfil(*args: str, **env: str | None) -> Any:
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args), env=env or None)
    finally:
        get_settings.cache_clear()


def move(purchase_id: uuid.UUID, *path: State, **changes: Any) -> None:
    """Walk the purchase along `path` as the steps would (changes apply to the first move)."""
    for to_state in path:
        with session_scope() as session:
            purchase = session.get_one(Purchase, purchase_id, with_for_update=True)
            state_machine.transition(session, purchase, to_state, reason=f"test: to {to_state}", changes=changes,
                                     next_action_in=5 if state_machine.is_live(to_state) else None)
        changes = {}


def last_history(purchase_id: uuid.UUID) -> PurchaseTransition:
    return state_machine_history(purchase_id)[-1]


def state_machine_history(purchase_id: uuid.UUID) -> list[PurchaseTransition]:
    with session_scope() as session:
        return state_machine.history(session, purchase_id)


def last_event(purchase_id: uuid.UUID) -> OutboxEvent:
    with session_scope() as session:
        return session.scalars(select(OutboxEvent).where(OutboxEvent.purchase_id == purchase_id)
                               .order_by(OutboxEvent.transition_id.desc())).first()  # type: ignore[return-value]


# ---- cancel ------------------------------------------------------------------------------------


def test_cancel_fails_a_received_purchase_with_the_reason_and_the_operator_in_history_and_event() -> None:
    body = request()
    purchase_id = stored_purchase(**body)
    result = fulfil("cancel", body["request_id"], "--reason", "customer withdrew", "--operator", "alice", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["from"] == "received" and shown["to"] == "failed" and "alice" in shown["reason"]

    purchase = reload(purchase_id)
    assert purchase.state == "failed" and purchase.next_action_at is None
    assert (purchase.failure_code, purchase.failure_message) == (CANCELLED_BY_OPERATOR, "customer withdrew")
    assert last_history(purchase_id).reason == "cancelled by operator alice: customer withdrew"
    event = last_event(purchase_id)
    jsonschema.Draft202012Validator(EVENT_SCHEMA, format_checker=jsonschema.FormatChecker()).validate(event.payload)
    assert event.routing_key == "purchase.failed"
    assert event.payload["failure"] == {"code": CANCELLED_BY_OPERATOR, "message": "customer withdrew"}

    again = fulfil("cancel", str(purchase_id), "--reason", "twice")
    assert again.exit_code == EXIT_NOT_FOUND and "finished, nothing to cancel" in again.stderr


@pytest.mark.parametrize("path", [[State.QUOTED], [State.PAUSED], [State.STALLED], [State.QUOTED, State.STALLED]],
                         ids=lambda p: "->".join(p))
def test_cancel_works_where_no_order_can_exist(path: list[State]) -> None:
    purchase_id = stored_purchase()
    move(purchase_id, *path, quote_id=f"qt_{uuid.uuid4().hex[:8]}")
    result = fulfil("cancel", str(purchase_id), "--reason", "not needed", USER="bob")
    assert result.exit_code == 0, result.output
    assert reload(purchase_id).state == "failed"
    assert last_history(purchase_id).reason == "cancelled by operator bob: not needed"  # $USER by default


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ([State.QUOTED, State.ORDERING], "an order request may be in flight"),
        ([State.QUOTED, State.ORDERING, State.ORDER_UNKNOWN], "being resolved"),
        ([State.QUOTED, State.ORDERING, State.AWAITING_TRANSFER], "exists"),
        ([State.QUOTED, State.ORDERING, State.STALLED], "stalled while ordering"),
        ([State.QUOTED, State.ORDERING, State.NEEDS_ATTENTION], "--no-order-confirmed"),
    ],
    ids=lambda value: "->".join(value) if isinstance(value, list) else None,
)
def test_cancel_is_refused_where_an_order_may_exist(path: list[State], why: str) -> None:
    purchase_id = stored_purchase()
    changes: dict[str, Any] = {"quote_id": f"qt_{uuid.uuid4().hex[:8]}"}
    move(purchase_id, *path[:-1], **changes)
    move(purchase_id, path[-1], **({"order_id": f"TBB-T-{uuid.uuid4().hex[:8]}"}
                                   if path[-1] is State.AWAITING_TRANSFER else {}))
    before = reload(purchase_id).state
    result = fulfil("cancel", str(purchase_id), "--reason", "give up", "--operator", "alice")
    assert result.exit_code == EXIT_REFUSED, result.output
    assert why in result.stderr and "Traceback" not in result.output
    assert reload(purchase_id).state == before


def test_needs_attention_is_cancelled_only_once_a_person_confirmed_there_is_no_order() -> None:
    purchase_id = stored_purchase()
    move(purchase_id, State.QUOTED, State.ORDERING, State.ORDER_UNKNOWN, quote_id=f"qt_{uuid.uuid4().hex[:8]}")
    move(purchase_id, State.NEEDS_ATTENTION, failure_code="ORDER_OUTCOME_UNKNOWN", failure_message="check")
    refused = fulfil("cancel", str(purchase_id), "--reason", "r", "--operator", "alice")
    assert refused.exit_code == EXIT_REFUSED and "fulfil resolve" in refused.stderr
    done = fulfil("cancel", str(purchase_id), "--reason", "partner confirms no order", "--operator", "alice",
                  "--no-order-confirmed")
    assert done.exit_code == 0, done.output
    assert reload(purchase_id).failure_code == CANCELLED_BY_OPERATOR
    assert "alice after checking with the partner that no order exists" in last_history(purchase_id).reason

    with_order = stored_purchase()
    move(with_order, State.QUOTED, State.ORDERING, State.AWAITING_TRANSFER, quote_id=f"qt_{uuid.uuid4().hex[:8]}")
    move(with_order, State.NEEDS_ATTENTION, order_id=f"TBB-T-{uuid.uuid4().hex[:8]}")
    result = fulfil("cancel", str(with_order), "--reason", "r", "--no-order-confirmed", "--operator", "alice")
    assert result.exit_code == EXIT_REFUSED and "an order exists" in result.stderr


def test_cancel_of_an_unknown_purchase_exits_1() -> None:
    result = fulfil("cancel", f"never-{uuid.uuid4()}", "--reason", "r", "--operator", "alice")
    assert result.exit_code == EXIT_NOT_FOUND and "no purchase with id or request_id" in result.stderr


def test_database_commands_need_nothing_but_the_database() -> None:
    unset: dict[str, str | None] = {name: None for name in ("BROKER_URL", "TBB_BASE_URL", "TBB_CLIENT_ID",
                                                            "TBB_CLIENT_SECRET")}
    purchase_id = stored_purchase()
    listed = fulfil("list", "--state", "received", "--json", **unset)
    assert listed.exit_code == 0, listed.output
    assert str(purchase_id) in {p["purchase_id"] for p in json.loads(listed.stdout)["purchases"]}
    shown = fulfil("status", str(purchase_id), "--json", **unset)
    assert shown.exit_code == 0 and json.loads(shown.stdout)["state"] == "received"
    missing = fulfil("status", f"never-{uuid.uuid4()}", **unset)
    assert missing.exit_code == EXIT_NOT_FOUND and "BROKER_URL is not set" in missing.stderr
    assert fulfil("rejected", "list", "--limit", "1", **unset).exit_code == 0
    done = fulfil("cancel", str(purchase_id), "--reason", "r", "--operator", "erin", **unset)
    assert done.exit_code == 0, done.output


# ---- resolve -------------------------------------------------------------------------------------


def quoted_with_an_order_at_the_partner() -> tuple[uuid.UUID, Order]:
    """A quoted purchase whose order reached the partner, but whose answer never came back."""
    purchase_id = stored_purchase()
    quote.quote(purchase_id, partner=get_partners(), settings=get_settings())
    purchase = reload(purchase_id)
    assert purchase.state == "quoted" and purchase.quote_id
    order = get_partner().create_order(purchase.quote_id, delivery_type=purchase.delivery_type,
                                       delivery_deadline=purchase.delivery_deadline, request_id=str(uuid.uuid4()))
    return purchase_id, order


def test_resolve_records_the_found_order_and_names_the_operator(clean_sandbox: Sandbox) -> None:
    purchase_id, order = quoted_with_an_order_at_the_partner()
    move(purchase_id, State.ORDERING, State.ORDER_UNKNOWN)
    move(purchase_id, State.NEEDS_ATTENTION, failure_code="ORDER_OUTCOME_UNKNOWN", failure_message="check")
    with session_scope() as session:  # the order also turned up late, and was kept as an orphan
        purchase = session.get_one(Purchase, purchase_id, with_for_update=True)
        assert state_machine.orphan_order(session, purchase, order=order_details(order), reason="test", message_id=None)

    result = fulfil("resolve", str(purchase_id), "--order-id", order.order_id, "--operator", "carol",
                    "--note", "found in the partner portal", "--json")
    assert result.exit_code == 0, result.output
    purchase = reload(purchase_id)
    assert purchase.state == "awaiting_transfer" and purchase.order_id == order.order_id
    assert purchase.transfer_email == order.transfer_email and purchase.seat_range == order.seat_range
    assert purchase.failure_code is None and purchase.next_action_at is not None
    reason = last_history(purchase_id).reason
    assert f"order {order.order_id}" in reason and "recorded by operator carol: found in the partner portal" in reason
    assert last_event(purchase_id).payload["order"]["order_id"] == order.order_id
    with session_scope() as session:
        orphan = session.get_one(OrphanOrder, order.order_id)
    assert orphan.resolved_at is not None and "carol" in (orphan.resolution or "")

    again = fulfil("resolve", str(purchase_id), "--order-id", order.order_id, "--operator", "carol")
    assert again.exit_code == EXIT_NOT_FOUND and "already has order" in again.stderr


def test_resolve_refuses_an_order_of_another_purchase_and_unknown_orders(clean_sandbox: Sandbox) -> None:
    purchase_id, _ = quoted_with_an_order_at_the_partner()
    move(purchase_id, State.ORDERING, State.ORDER_UNKNOWN)
    _, foreign = quoted_with_an_order_at_the_partner()

    other = fulfil("resolve", str(purchase_id), "--order-id", foreign.order_id, "--operator", "carol")
    assert other.exit_code == EXIT_REFUSED, other.output
    assert f"made from quote {foreign.quote_id}, which is not one of" in other.stderr

    missing = fulfil("resolve", str(purchase_id), "--order-id", "TBB-20000101-NONE", "--operator", "carol")
    assert missing.exit_code == EXIT_NOT_FOUND and "the partner has no order TBB-20000101-NONE" in missing.stderr

    bad = fulfil("resolve", str(purchase_id), "--order-id", "../v1/admin", "--operator", "carol")
    assert bad.exit_code == EXIT_USAGE
    assert reload(purchase_id).state == "order_unknown"


def test_resolve_is_refused_where_no_order_is_awaited() -> None:
    purchase_id = stored_purchase()
    result = fulfil("resolve", str(purchase_id), "--order-id", "TBB-20000101-ABCD", "--operator", "carol")
    assert result.exit_code == EXIT_REFUSED and "is received" in result.stderr


def test_resolve_with_the_partner_unreachable_names_it_and_changes_nothing(configured: dict[str, str]) -> None:
    purchase_id = stored_purchase()
    move(purchase_id, State.QUOTED, State.ORDERING, State.ORDER_UNKNOWN, quote_id=f"qt_{uuid.uuid4().hex[:8]}")
    port = free_port()
    result = fulfil("resolve", str(purchase_id), "--order-id", "TBB-20000101-ABCD", "--operator", "carol",
                    TBB_BASE_URL=f"http://127.0.0.1:{port}", TBB_MAX_RETRY_SECONDS="1", TBB_MAX_ATTEMPTS="1")
    assert result.exit_code == EXIT_UNAVAILABLE, result.output
    assert f"partner API at 127.0.0.1:{port} unreachable" in result.stderr
    assert configured["TBB_CLIENT_SECRET"] not in result.output and "Traceback" not in result.output
    assert reload(purchase_id).state == "order_unknown"


# ---- rejected requests -----------------------------------------------------------------------------


def test_rejected_list_and_show() -> None:
    body = request(quantity=-1)
    with pytest.raises(intake.InvalidPurchaseRequest):
        intake.accept(body, settings=get_settings())

    listed = fulfil("rejected", "list", "--request-id", body["request_id"], "--json")
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.stdout)
    assert row["reason_code"] == "INVALID_REQUEST" and "quantity" in row["reason"] and "raw_body" not in row
    assert row["rejected_at"].endswith("Z")

    text = fulfil("rejected", "list", "--limit", "5")
    assert text.exit_code == 0 and body["request_id"] in text.stdout and "rejected request(s)" in text.stdout

    shown = fulfil("rejected", "show", str(row["id"]), "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["raw_body"].startswith("{")
    plain = fulfil("rejected", "show", str(row["id"]))
    assert plain.exit_code == 0 and f"request_id  {body['request_id']}" in plain.stdout and "quantity" in plain.stdout

    hostile = f"rej-\x1b[2J-{uuid.uuid4()}"  # a terminal escape in what the sender wrote
    with pytest.raises(intake.InvalidPurchaseRequest):
        intake.accept({"request_id": hostile}, settings=get_settings())
    [kept] = rejected_requests(request_id=hostile)
    for args in (["rejected", "show", str(kept.id)], ["rejected", "list", "--request-id", hostile]):
        printed = fulfil(*args)
        assert printed.exit_code == 0 and "\x1b" not in printed.stdout and "rej-\\x1b[2J-" in printed.stdout

    missing = fulfil("rejected", "show", "999999999")
    assert missing.exit_code == EXIT_NOT_FOUND and "no rejected request 999999999" in missing.stderr


# ---- retry sends the step without the workers' settings ---------------------------------------------


def test_retry_sends_to_the_queues_the_workers_consume(configured: dict[str, str]) -> None:
    from fulfilment.rabbitmq.queues import STEP_QUEUES

    actors = sorted(str(step) for step in STEP_QUEUES)
    probe = ("import json, dramatiq, workers\n"
             f"print(json.dumps({{a: dramatiq.get_broker().get_actor(a).queue_name for a in {actors!r}}}))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env={**os.environ, **configured},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == STEP_QUEUES


def test_retry_of_a_stalled_purchase_names_the_operator_and_sends_its_step() -> None:
    from fulfilment.rabbitmq.queues import queue_depths

    own = servers.create_vhost("fulfil_test_retry")  # no worker consumes here: the message stays to be counted
    try:
        purchase_id = stored_purchase()
        move(purchase_id, State.STALLED)
        result = fulfil("retry", str(purchase_id), "--operator", "dave", BROKER_URL=own.url)
        assert result.exit_code == 0, result.output
        assert "stalled -> received; sent quote_purchase" in result.stdout
        assert last_history(purchase_id).reason == "resumed by operator dave (fulfil retry)"
        assert queue_depths(own.url, ("purchases.quote",)) == {"purchases.quote": 1}

        move(purchase_id, State.STALLED)  # the broker goes away: the resume stands, the scheduler sends it
        down = fulfil("retry", str(purchase_id), "--operator", "dave",
                      BROKER_URL=f"amqp://fulfil:fulfil@127.0.0.1:{free_port()}/%2F")
        assert down.exit_code == EXIT_UNAVAILABLE, down.output
        assert "stalled -> received, but quote_purchase could not be sent: broker (RabbitMQ) at" in down.stderr
        assert reload(purchase_id).state == "received"
    finally:
        servers.delete_vhost(own)
