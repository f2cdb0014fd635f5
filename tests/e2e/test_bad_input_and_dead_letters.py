"""Bad messages never crash a worker or go unrecorded; exhausted retries leave a visible stall."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from sqlalchemy import select

from fulfilment.db import session_scope
from models import RejectedRequest
from tests.support.factories import request
from tests.support.pipeline import Pipeline, in_states, start_pipeline, wait_until
from tests.support.sandbox import Sandbox


@pytest.fixture(scope="module")
def pipeline(app_env: dict[str, str], log_dir: Path) -> Iterator[Pipeline]:
    # Few, fast retries so that a job can exhaust them within the test.
    env = {**app_env, "ACTOR_MAX_RETRIES": "2", "ACTOR_MAX_BACKOFF_MS": "300", "TBB_MAX_ATTEMPTS": "1"}
    running = start_pipeline(env, log_dir, name="deadletters")
    yield running
    running.stop()


def publish_raw(broker_url: str, queue: str, body: bytes) -> None:
    """Publish like a non-Python service would, bypassing our helper and its validation."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    finally:
        connection.close()


def dramatiq_body(actor: str, queue: str, args: list[object]) -> bytes:
    return json.dumps({"queue_name": queue, "actor_name": actor, "args": args, "kwargs": {}, "options": {},
                       "message_id": str(uuid.uuid4()), "message_timestamp": int(time.time() * 1000)}).encode()


def dead_letters(broker_url: str, queue: str) -> list[dict[str, object]]:
    """Read (and requeue) what sits in a dead-letter queue."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    found = []
    try:
        channel = connection.channel()
        tags = []
        while True:
            method, _props, body = channel.basic_get(f"{queue}.XQ")
            if method is None:
                break
            tags.append(method.delivery_tag)
            try:
                found.append(json.loads(body))
            except ValueError:
                found.append({"raw": body, "args": None, "options": {}})
        for tag in tags:
            channel.basic_nack(tag, requeue=True)
    finally:
        connection.close()
    return found


def test_hostile_intake_messages_are_recorded_dead_lettered_and_do_not_stop_good_ones(
    pipeline: Pipeline, clean_sandbox: Sandbox
) -> None:
    url = pipeline.env["BROKER_URL"]
    bad = {
        "bad-qty": request(request_id="bad-qty-" + uuid.uuid4().hex, quantity=-1),
        "bad-type": request(request_id="bad-type-" + uuid.uuid4().hex, delivery_type="telegram"),
        "bad-naive": request(request_id="bad-naive-" + uuid.uuid4().hex, delivery_deadline="2031-01-01T00:00:00"),
        "bad-extra": request(request_id="bad-extra-" + uuid.uuid4().hex, customer_email="pii@example.com"),
        "bad-huge": request(request_id="bad-huge-" + uuid.uuid4().hex, section_name="S" * 100_000),
    }
    for body in bad.values():
        publish_raw(url, "purchases.intake", dramatiq_body("submit_purchase", "purchases.intake", [body]))
    publish_raw(url, "purchases.intake", dramatiq_body("submit_purchase", "purchases.intake", ["not an object"]))
    good = pipeline.submit(request())

    wait_until([good], in_states("awaiting_transfer", "transfer_complete"), pipeline=pipeline)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with session_scope() as session:
            rows = {r.request_id: r for r in session.scalars(
                select(RejectedRequest).where(RejectedRequest.request_id.in_([b["request_id"] for b in bad.values()])))}
        if len(rows) == len(bad):
            break
        time.sleep(0.3)
    assert {rows[b["request_id"]].reason_code for b in bad.values()} == {"INVALID_REQUEST"}
    assert "quantity" in rows[bad["bad-qty"]["request_id"]].reason
    assert "delivery_type" in rows[bad["bad-type"]["request_id"]].reason
    assert "naive" in rows[bad["bad-naive"]["request_id"]].reason
    assert "customer_email: unknown field" in rows[bad["bad-extra"]["request_id"]].reason
    assert len(rows[bad["bad-huge"]["request_id"]].raw_body) <= 4_000
    time.sleep(1)
    dead = dead_letters(url, "purchases.intake")
    dead_ids = {m["args"][0].get("request_id") for m in dead if m["args"] and isinstance(m["args"][0], dict)}
    assert {b["request_id"] for b in bad.values()} <= dead_ids
    # Invalid requests are not retried: they went to the XQ on the first failure.
    assert all(m["options"].get("retries", 0) <= 1 for m in dead)
    assert pipeline.workers.alive()


def test_messages_with_a_bad_purchase_id_or_unknown_actor_do_not_hurt_the_workers(
    pipeline: Pipeline, clean_sandbox: Sandbox
) -> None:
    url = pipeline.env["BROKER_URL"]
    publish_raw(url, "purchases.quote", dramatiq_body("quote_purchase", "purchases.quote", ["not-a-uuid"]))
    publish_raw(url, "purchases.quote", dramatiq_body("no_such_actor", "purchases.quote", ["x"]))
    publish_raw(url, "purchases.quote", b"\x00\xff this is not json")
    publish_raw(url, "purchases.quote", dramatiq_body("quote_purchase", "purchases.quote", [str(uuid.uuid4())]))
    good = pipeline.submit(request())
    wait_until([good], in_states("awaiting_transfer", "transfer_complete"), pipeline=pipeline)
    assert pipeline.workers.alive()
    dead = dead_letters(url, "purchases.quote")
    assert any(m["args"] == ["not-a-uuid"] for m in dead)
    assert any(m.get("raw") == b"\x00\xff this is not json" for m in dead)


def test_a_job_that_exhausts_its_retries_leaves_the_purchase_stalled_with_its_error(
    pipeline: Pipeline, clean_sandbox: Sandbox
) -> None:
    clean_sandbox.set_faults({"create_quote": {"error_rate": 1.0, "error_statuses": [503], "plain_body_rate": 0}})
    purchase_id = pipeline.submit(request())
    purchase = wait_until([purchase_id], in_states("stalled"), timeout=60, pipeline=pipeline)[purchase_id]
    clean_sandbox.clear_faults()
    assert purchase.stalled_from == "received"
    assert purchase.last_error and "503" in purchase.last_error or "SERVICE_UNAVAILABLE" in (purchase.last_error or "")
    assert purchase.next_action_at is None
    dead = dead_letters(pipeline.env["BROKER_URL"], "purchases.quote")
    assert any(m["args"] == [str(purchase_id)] for m in dead)
    time.sleep(2)  # the scheduler leaves a stalled purchase alone
    assert wait_until([purchase_id], in_states("stalled"))[purchase_id].state == "stalled"
