"""Ticketmaster purchases through real worker processes, the scheduler, RabbitMQ, Postgres and both
sandboxes over HTTP: side by side with TBB, the tickets in events and never in logs, forced polling
with the workers killed mid-poll, duplicate and late messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from fulfilment.db import session_scope
from fulfilment.partners.ticketmaster.flow import source_account_id
from fulfilment.rabbitmq.publisher import confirmed_broker, send_step
from fulfilment.step_names import StepName
from models import Purchase, PurchaseTransition
from tests.support.events import EventListener
from tests.support.factories import request, tm_request
from tests.support.pipeline import Pipeline, in_states, restart_workers, start_pipeline, wait_until
from tests.support.processes import start_scheduler
from tests.support.sandbox import Sandbox
from tests.support.servers import REPO
from tests.support.tm_sandbox import TMSandboxProcess


@pytest.fixture(scope="module")
def pipeline(app_env: dict[str, str], log_dir: Path) -> Iterator[Pipeline]:
    running = start_pipeline(app_env, log_dir, name="tm")
    yield running
    running.stop()


@pytest.fixture
def tm(clean_tm_sandbox: TMSandboxProcess) -> TMSandboxProcess:
    return clean_tm_sandbox


def orders_per_purchase(tm: TMSandboxProcess, ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    per_source = tm.admin.counts()["orders_per_source_account"]
    return {purchase_id: per_source.get(source_account_id(purchase_id), 0) for purchase_id in ids}


def test_tbb_and_ticketmaster_purchases_side_by_side(pipeline: Pipeline, tm: TMSandboxProcess,
                                                     clean_sandbox: Sandbox) -> None:
    listener = EventListener(pipeline.env["BROKER_URL"], "purchase.#")
    try:
        tm_bodies = [tm_request(quantity=1 + i % 2) for i in range(4)]
        tm_ids = [pipeline.submit(body) for body in tm_bodies]
        tbb_ids = [pipeline.submit(request()) for _ in range(4)]

        issued = wait_until(tm_ids, in_states("tickets_issued"), pipeline=pipeline)
        wait_until(tbb_ids, in_states("transfer_complete"), pipeline=pipeline)
        assert orders_per_purchase(tm, tm_ids) == {purchase_id: 1 for purchase_id in tm_ids}

        wanted = {str(purchase_id) for purchase_id in tm_ids}

        def all_issued(got: list[dict[str, Any]]) -> bool:
            return wanted <= {e["body"]["purchase_id"] for e in got if e["routing_key"] == "purchase.tickets_issued"}

        received = listener.drain(until=all_issued, timeout=30)
    finally:
        listener.close()
    tokens: list[str] = []
    for body, purchase_id in zip(tm_bodies, tm_ids, strict=True):
        [event] = [e["body"] for e in received if e["routing_key"] == "purchase.tickets_issued"
                   and e["body"]["purchase_id"] == str(purchase_id)]
        assert len(event["tickets"]) == body["quantity"]
        assert event["order"]["order_id"] == issued[purchase_id].order_id
        tokens += [ticket["token"] for ticket in event["tickets"]]
    assert all(tokens)
    # The tickets reach the requester in events, never the logs (nor does the apikey or the key).
    logs = pipeline.workers.log_path.read_text() + pipeline.scheduler.log_path.read_text()
    nonces = [body["payment_nonce"] for body in tm_bodies]
    for secret in [*tokens, pipeline.env["TM_APIKEY"], pipeline.env["TICKET_KEY"], *nonces]:
        assert secret not in logs
    # Nor Postgres: the request's nonce was sealed at intake, and is gone once a payment used it.
    with session_scope() as session:
        stored = " ".join(str(p.partner_data) for p in session.scalars(select(Purchase).where(Purchase.id.in_(tm_ids))))
        stored += " ".join(str(t.reason) for t in session.scalars(select(PurchaseTransition)))
    assert not any(nonce in stored for nonce in nonces)
    assert "payment_nonce'" not in stored and "payment_nonce_used" in stored
    counts = tm.admin.counts()
    assert counts["concurrent_calls"] == 0 and counts["leaked_carts"] == 0


def test_forced_polling_with_the_workers_killed_mid_poll(pipeline: Pipeline, tm: TMSandboxProcess,
                                                         log_dir: Path) -> None:
    tm.admin.configure(polling_rate=1.0, polling_wait_seconds=2)
    ids = [pipeline.submit(tm_request()) for _ in range(6)]
    # Let them get to their first 202s, then kill every worker without warning.
    deadline = time.monotonic() + 20
    while tm.admin.counts()["polling_answers"] < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(pipeline.workers.pid, signal.SIGKILL)
    pipeline.workers.process.wait(10)  # type: ignore[union-attr]
    restart_workers(pipeline, log_dir)

    wait_until(ids, in_states("tickets_issued"), pipeline=pipeline, timeout=120)
    counts = tm.admin.counts()
    assert orders_per_purchase(tm, ids) == {purchase_id: 1 for purchase_id in ids}
    assert counts["polls_before_wait"] == 0
    assert counts["concurrent_calls"] == 0
    assert counts["commits_on_expired_carts"] == 0
    assert counts["requests"]["commit"] == len(ids)  # continued by polling, never committed again


def test_duplicate_and_late_messages_never_buy_twice(pipeline: Pipeline, tm: TMSandboxProcess) -> None:
    bodies = [tm_request() for _ in range(4)]
    ids = [pipeline.submit(body) for body in bodies]
    for body in bodies:
        pipeline.submit(body)  # the same request again
    broker = confirmed_broker(pipeline.env["BROKER_URL"])
    try:
        for _ in range(3):  # duplicate and stray step messages, some arriving after the purchase moved on
            for purchase_id in ids:
                for step in (StepName.QUOTE, StepName.ORDER, StepName.RESOLVE, StepName.TICKETS):
                    send_step(broker, step, purchase_id)
            time.sleep(0.3)
    finally:
        broker.close()
    wait_until(ids, in_states("tickets_issued"), pipeline=pipeline)
    assert orders_per_purchase(tm, ids) == {purchase_id: 1 for purchase_id in ids}
    assert tm.admin.counts()["concurrent_calls"] == 0


def test_safetix_refresh_once_per_ticket_with_two_schedulers_then_on_demand(
        pipeline: Pipeline, tm: TMSandboxProcess, app_env: dict[str, str], log_dir: Path) -> None:
    second = start_scheduler(app_env, log_dir, name="tm-scheduler-standby")
    listener = EventListener(pipeline.env["BROKER_URL"], "purchase.tickets_refreshed")
    try:
        bodies = [tm_request(quantity=2) for _ in range(2)]
        ids = [pipeline.submit(body) for body in bodies]
        wait_until(ids, in_states("tickets_issued"), pipeline=pipeline)
        # As if start - 20 h had come: the event starts in 20 h from now.
        with session_scope() as session:
            session.execute(text("UPDATE tickets SET event_start = now() + interval '20 hours', "
                                 "refresh_due_at = now() WHERE purchase_id = ANY(:ids)"), {"ids": ids})
        due = time.time()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with session_scope() as session:
                left = session.execute(text("SELECT count(*) FROM tickets WHERE purchase_id = ANY(:ids) "
                                            "AND refreshed_at IS NULL"), {"ids": ids}).scalar_one()
            if left == 0:
                break
            time.sleep(0.2)
        assert left == 0, pipeline.scheduler.log_tail(20)
        time.sleep(2)  # a few more ticks of both schedulers: nothing more may happen
        calls = tm.admin.counts()["securerender_calls"]
        assert sorted(len(at) for at in calls.values()) == [1, 1, 1, 1]
        for at in calls.values():  # inside [due, due + a tick and a message's way]
            assert 0 <= epoch(at[0]["at"]) - due < 10
        received = listener.drain(until=2, timeout=15)
        assert sorted(e["body"]["purchase_id"] for e in received) == sorted(str(i) for i in ids)

        # On demand, as an operator (or another service) asks: a second call for its tickets only.
        asked = subprocess.run([sys.executable, "-m", "fulfilment.cli", "tickets", "refresh", bodies[0]["request_id"]],
                               cwd=REPO, env=pipeline.env, capture_output=True, text=True, timeout=60)
        assert asked.returncode == 0, asked.stderr
        received = listener.drain(until=3, timeout=15)
        assert received[-1]["body"]["refresh"] == {"trigger": "on_demand"}
        assert received[-1]["body"]["purchase_id"] == str(ids[0])
        assert sorted(len(at) for at in tm.admin.counts()["securerender_calls"].values()) == [1, 1, 2, 2]
    finally:
        listener.close()
        second.stop()


def epoch(moment: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()


def test_a_quota_reset_minutes_away_and_niterun_park_purchases_without_stalling_them(
        pipeline: Pipeline, tm: TMSandboxProcess) -> None:
    """Long waits are parked in Postgres: no worker sleeps, no dramatiq retry runs out (nothing stalls),
    and the purchases finish once the partner is back and their time has come."""
    tm.admin.force_quota(seconds=300)
    quota_ids = [pipeline.submit(tm_request()) for _ in range(2)]
    parked = wait_until(quota_ids, lambda p: p.state == "received" and p.claimed_until is None
                        and p.last_error is not None and "429" in p.last_error, pipeline=pipeline)
    for purchase in parked.values():
        assert purchase.next_action_at is not None
        assert 240 < (purchase.next_action_at.timestamp() - time.time()) <= 300
    tm.admin.lift_quota()
    tm.admin.niterun("on")
    niterun_ids = [pipeline.submit(tm_request()) for _ in range(2)]
    wait_until(niterun_ids, lambda p: p.state == "received" and p.claimed_until is None
               and p.last_error is not None and "20001" in p.last_error, pipeline=pipeline)
    calls = tm.admin.counts()["requests"]
    time.sleep(3)  # a few scheduler ticks: nothing moves, nothing stalls, nothing is retried
    still = wait_until(quota_ids + niterun_ids, in_states("received"), pipeline=pipeline)
    assert all(p.attempts <= 2 for p in still.values())
    assert tm.admin.counts()["requests"] == calls  # no call while parked
    # The partner is back and, as far as the purchases know, their time has come.
    tm.admin.niterun("off")
    with session_scope() as session:
        session.execute(text("UPDATE purchases SET next_action_at = now() WHERE id = ANY(:ids)"),
                        {"ids": quota_ids + niterun_ids})
    wait_until(quota_ids + niterun_ids, in_states("tickets_issued"), pipeline=pipeline)
