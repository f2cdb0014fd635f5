"""Operations end to end: dead-letter replay, `fulfil retry`, deadline flags, events out, health."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from fulfilment.db import session_scope
from models import OutboxEvent, PurchaseTransition
from tests.support.events import EventListener
from tests.support.factories import request
from tests.support.pipeline import Pipeline, in_states, start_pipeline, wait_until
from tests.support.sandbox import Sandbox
from tests.support.servers import REPO


@pytest.fixture(scope="module")
def pipeline(app_env: dict[str, str], log_dir: Path) -> Iterator[Pipeline]:
    env = {**app_env, "ACTOR_MAX_RETRIES": "2", "ACTOR_MAX_BACKOFF_MS": "300", "TBB_MAX_ATTEMPTS": "1",
           "DEADLINE_WARNING_HOURS": "24,2"}
    running = start_pipeline(env, log_dir, name="operations")
    yield running
    running.stop()


def fulfil(pipeline: Pipeline, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fulfilment.cli", *args], cwd=REPO, env=env or pipeline.env,
                          capture_output=True, text=True, timeout=120)


def stall_one(pipeline: Pipeline, sandbox: Sandbox) -> object:
    sandbox.set_faults({"create_quote": {"error_rate": 1.0, "error_statuses": [503]}})
    purchase_id = pipeline.submit(request())
    wait_until([purchase_id], in_states("stalled"), timeout=60, pipeline=pipeline)
    sandbox.clear_faults()
    return purchase_id


def test_dead_letter_replay_completes_a_stalled_purchase_with_one_order(
    pipeline: Pipeline, clean_sandbox: Sandbox
) -> None:
    purchase_id = stall_one(pipeline, clean_sandbox)
    listed = fulfil(pipeline, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    mine = [d for d in json.loads(listed.stdout) if d["purchase_id"] == str(purchase_id)]
    assert mine and mine[0]["actor"] == "quote_purchase" and mine[0]["queue"] == "purchases.quote"
    assert mine[0]["retries"] >= 2 and "503" in (mine[0]["error"] or "")

    dry = fulfil(pipeline, "dlq", "replay", mine[0]["message_id"], "--dry-run")
    assert dry.returncode == 0 and "would replay" in dry.stdout
    assert wait_until([purchase_id], in_states("stalled"))[purchase_id].state == "stalled"

    replayed = fulfil(pipeline, "dlq", "replay", mine[0]["message_id"])
    assert replayed.returncode == 0, replayed.stderr + replayed.stdout
    purchase = wait_until([purchase_id], in_states("awaiting_transfer", "transfer_complete"),
                          pipeline=pipeline)[purchase_id]
    assert len(clean_sandbox.orders(quote_id=purchase.quote_id)) == 1
    after = json.loads(fulfil(pipeline, "dlq", "list", "--json").stdout)
    assert all(d["message_id"] != mine[0]["message_id"] for d in after)


def test_retry_resumes_a_stalled_purchase_after_its_dead_message_is_gone(
    pipeline: Pipeline, clean_sandbox: Sandbox
) -> None:
    purchase_id = stall_one(pipeline, clean_sandbox)
    dead = [d for d in json.loads(fulfil(pipeline, "dlq", "list", "--json").stdout)
            if d["purchase_id"] == str(purchase_id)]
    for letter in dead:  # as if the 7-day TTL had expired
        assert fulfil(pipeline, "dlq", "purge", letter["message_id"], "--yes").returncode == 0
    retried = fulfil(pipeline, "retry", str(purchase_id))
    assert retried.returncode == 0, retried.stderr
    assert "stalled -> received" in retried.stdout
    purchase = wait_until([purchase_id], in_states("transfer_complete"), pipeline=pipeline)[purchase_id]
    assert len(clean_sandbox.orders(quote_id=purchase.quote_id)) == 1
    finished = fulfil(pipeline, "retry", str(purchase_id))
    assert finished.returncode == 1 and "finished, nothing to resume" in finished.stderr


def test_replaying_a_job_whose_purchase_moved_on_does_nothing(pipeline: Pipeline, clean_sandbox: Sandbox) -> None:
    purchase_id = stall_one(pipeline, clean_sandbox)
    assert fulfil(pipeline, "retry", str(purchase_id)).returncode == 0
    purchase = wait_until([purchase_id], in_states("transfer_complete"), pipeline=pipeline)[purchase_id]
    dead = [d["message_id"] for d in json.loads(fulfil(pipeline, "dlq", "list", "--json").stdout)
            if d["purchase_id"] == str(purchase_id)]
    assert dead, "the stalled job's dead message should still be there"
    before = clean_sandbox.stats()["requests"]
    for message_id in dead:
        replayed = fulfil(pipeline, "dlq", "replay", message_id)
        assert replayed.returncode == 0, replayed.stderr
        assert "1 replayed" in replayed.stdout
    import time

    time.sleep(2)
    after = clean_sandbox.stats()["requests"]
    assert after.get("create_quote", 0) == before.get("create_quote", 0)
    assert after.get("create_order", 0) == before.get("create_order", 0)
    assert wait_until([purchase_id], in_states("transfer_complete"))[purchase_id].order_id == purchase.order_id


def test_replaying_an_old_dead_letter_never_releases_a_purchase_held_for_a_person(
    pipeline: Pipeline, clean_sandbox: Sandbox
) -> None:
    purchase_id = stall_one(pipeline, clean_sandbox)
    from fulfilment import state_machine
    from fulfilment.state_machine import State
    from models import Purchase

    with session_scope() as session:  # later, an order outcome could not be settled: a person must look
        purchase = session.get_one(Purchase, purchase_id, with_for_update=True)
        state_machine.transition(session, purchase, State.NEEDS_ATTENTION, reason="test: outcome unknown",
                                 changes={"failure_code": "ORDER_OUTCOME_UNKNOWN", "failure_message": "check"})
    dead = [d["message_id"] for d in json.loads(fulfil(pipeline, "dlq", "list", "--json").stdout)
            if d["purchase_id"] == str(purchase_id)]
    assert dead
    replayed = fulfil(pipeline, "dlq", "replay", dead[0])
    assert "needs attention" in replayed.stderr and "0 replayed, 1 skipped" in replayed.stdout, replayed
    assert wait_until([purchase_id], in_states("needs_attention"))[purchase_id].state == "needs_attention"
    still = [d["message_id"] for d in json.loads(fulfil(pipeline, "dlq", "list", "--json").stdout)]
    assert dead[0] in still  # left dead, for after the person's `fulfil retry`


def test_near_deadline_purchases_are_flagged_once_per_window_with_events(
    pipeline: Pipeline, clean_sandbox: Sandbox
) -> None:
    clean_sandbox.configure(transfer_after_seconds=None)  # transfers stay pending
    listener = EventListener(pipeline.env["BROKER_URL"], binding="purchase.deadline_near")
    try:
        soon = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1, minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
        near = pipeline.submit(request(delivery_deadline=soon))
        middle = pipeline.submit(request(delivery_deadline=later))
        far = pipeline.submit(request())  # three days away: no window yet
        wait_until([near, middle, far], in_states("awaiting_transfer"), pipeline=pipeline)
        events = listener.drain(until=3, timeout=30)
        import time

        time.sleep(2)  # more scheduler ticks: nothing is flagged twice
        events = listener.drain(timeout=1)
        shown = fulfil(pipeline, "list", "--flagged", "--json")
    finally:
        listener.close()
        clean_sandbox.configure(transfer_after_seconds=2)
    by_purchase: dict[str, list[float]] = {}
    for event in events:
        assert event["routing_key"] == "purchase.deadline_near"
        by_purchase.setdefault(event["body"]["purchase_id"], []).append(
            event["body"]["deadline_warning"]["window_hours"])
    assert sorted(by_purchase[str(near)]) == [2.0, 24.0]
    assert by_purchase[str(middle)] == [24.0]
    assert str(far) not in by_purchase
    with session_scope() as session:
        flags = session.scalars(select(PurchaseTransition).where(
            PurchaseTransition.purchase_id == near, PurchaseTransition.kind == "deadline_flag")).all()
    assert len(flags) == 2
    flagged = {p["purchase_id"]: p for p in json.loads(shown.stdout)["purchases"]}
    assert str(near) in flagged and str(middle) in flagged and str(far) not in flagged
    assert flagged[str(near)]["deadline_windows_hours"] == [2.0, 24.0]


def test_every_transition_reaches_a_bound_consumer_once_per_event_id(
    pipeline: Pipeline, clean_sandbox: Sandbox
) -> None:
    listener = EventListener(pipeline.env["BROKER_URL"])
    try:
        purchase_id = pipeline.submit(request())
        wait_until([purchase_id], in_states("transfer_complete"), pipeline=pipeline)
        with session_scope() as session:
            expected = {str(e.id): e.routing_key for e in session.scalars(
                select(OutboxEvent).where(OutboxEvent.purchase_id == purchase_id))}
        def mine(got: list[dict]) -> list[dict]:
            return [m for m in got if m["body"]["purchase_id"] == str(purchase_id)]

        received = mine(listener.drain(until=lambda got: len(mine(got)) >= len(expected), timeout=30))
    finally:
        listener.close()
    assert {m["message_id"]: m["routing_key"] for m in received} == expected
    assert [m["body"]["state"] for m in received][-1] == "transfer_complete"


def test_health_names_the_failing_part_and_never_prints_secrets(pipeline: Pipeline) -> None:
    ok = fulfil(pipeline, "health")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for part in ("database", "broker", "tbb", "ticketmaster"):  # each enabled partner by name
        assert f"{part:<13} ok" in ok.stdout, ok.stdout

    bad_secret = fulfil(pipeline, "health", env={**pipeline.env, "TBB_CLIENT_SECRET": "wrong-secret-xyz"})
    assert bad_secret.returncode == 3  # a dependency unusable (fulfilment/cli/common.py exit codes)
    assert f"{'tbb':<13} FAILED" in bad_secret.stdout and "INVALID_CREDENTIALS" in bad_secret.stdout
    assert "wrong-secret-xyz" not in bad_secret.stdout + bad_secret.stderr
    assert f"{'ticketmaster':<13} ok" in bad_secret.stdout

    bad_apikey = fulfil(pipeline, "health", env={**pipeline.env, "TM_APIKEY": "wrong-apikey-xyz"})
    assert bad_apikey.returncode == 3
    assert f"{'ticketmaster':<13} FAILED" in bad_apikey.stdout, bad_apikey.stdout
    assert "wrong-apikey-xyz" not in bad_apikey.stdout + bad_apikey.stderr

    bad_broker = fulfil(pipeline, "health", env={**pipeline.env,
                                                 "BROKER_URL": "amqp://fulfil:hunter2pw@127.0.0.1:1/%2F"})
    assert bad_broker.returncode == 3 and f"{'broker':<13} FAILED" in bad_broker.stdout
    assert "unreachable at 127.0.0.1:1: ConnectionRefusedError" in bad_broker.stdout
    assert "hunter2pw" not in bad_broker.stdout + bad_broker.stderr
