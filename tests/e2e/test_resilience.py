"""Crashes, kills and hand-overs: nothing lost, nothing ordered twice (invariants 1 and 2)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pika
import pytest

from tests.support.factories import request
from tests.support.pipeline import (
    Pipeline,
    in_states,
    partner_orders,
    restart_workers,
    start_pipeline,
    wait_until,
)
from tests.support.processes import start_scheduler
from tests.support.sandbox import Sandbox
from tests.support.servers import free_port

DONE = ("awaiting_transfer", "transfer_complete")


@pytest.fixture(scope="module")
def pipeline(app_env: dict[str, str], log_dir: Path) -> Iterator[Pipeline]:
    # A short lease, so that work held by a killed worker is re-driven quickly.
    env = {**app_env, "CLAIM_LEASE_SECONDS": "8", "STEP_DEADLINE_SECONDS": "3", "REDRIVE_AFTER_SECONDS": "2"}
    running = start_pipeline(env, log_dir, name="resilience")
    yield running
    running.stop()


def leader_gauge(port: int) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.TransportError:
        return None
    for line in text.splitlines():
        if line.startswith("fulfil_scheduler_leader "):
            return float(line.split()[1])
    return None


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_schedulers_one_leads_and_the_standby_takes_over(
    pipeline: Pipeline, clean_sandbox: Sandbox, log_dir: Path
) -> None:
    first_port = int(pipeline.env["METRICS_PORT"])
    second_port = free_port()
    standby = start_scheduler({**pipeline.env, "METRICS_PORT": str(second_port)}, log_dir, name="standby-scheduler")
    try:
        wait_for(lambda: leader_gauge(second_port) is not None, 30, "the second scheduler's metrics")
        time.sleep(2)
        assert leader_gauge(first_port) == 1.0 and leader_gauge(second_port) == 0.0
        assert "leading" not in standby.log_tail(200)

        pipeline.scheduler.kill()  # SIGKILL: no chance to release the lock politely
        wait_for(lambda: leader_gauge(second_port) == 1.0, 15, "the standby to take over")
        # The new leader does the leader's work: transfer checks only it schedules.
        purchase_id = pipeline.submit(request())
        wait_until([purchase_id], in_states("transfer_complete"), pipeline=pipeline)
    finally:
        pipeline.scheduler = standby  # the module's pipeline goes on with the survivor


def test_killed_workers_and_deleted_messages_only_delay_purchases(
    pipeline: Pipeline, clean_sandbox: Sandbox, log_dir: Path
) -> None:
    # Slow quotes and orders so that workers hold claimed purchases and unacked messages when killed.
    clean_sandbox.set_faults({"create_quote": {"latency_ms": 1500}, "create_order": {"latency_ms": 1500}})
    ids = [pipeline.submit(request(section_name="202")) for _ in range(12)]
    time.sleep(2.5)
    pipeline.workers.kill()  # SIGKILL the whole worker process group
    connection = pika.BlockingConnection(pika.URLParameters(pipeline.env["BROKER_URL"]))
    try:  # and lose whatever was still queued
        channel = connection.channel()
        purged = sum(channel.queue_purge(q).method.message_count
                     for q in ("purchases.quote", "purchases.order", "purchases.transfer"))
    finally:
        connection.close()
    clean_sandbox.clear_faults()
    restart_workers(pipeline, log_dir)
    done = wait_until(ids, in_states(*DONE), timeout=120, pipeline=pipeline)
    for purchase in done.values():
        assert len(partner_orders(clean_sandbox, purchase.id)) == 1
    assert purged >= 0  # informative: messages may or may not have been waiting


def test_sigterm_during_a_batch_loses_nothing_and_orders_nothing_twice(
    pipeline: Pipeline, clean_sandbox: Sandbox, log_dir: Path
) -> None:
    clean_sandbox.set_faults({"create_order": {"latency_ms": 300}, "create_quote": {"latency_ms": 100}})
    ids = [pipeline.submit(request(section_name="201")) for _ in range(30)]
    time.sleep(1.5)
    code = pipeline.workers.stop(timeout=60)  # SIGTERM, as a supervisor does
    assert code is not None
    clean_sandbox.clear_faults()
    restart_workers(pipeline, log_dir)
    done = wait_until(ids, in_states(*DONE), timeout=120, pipeline=pipeline)
    assert len(done) == 30
    for purchase in done.values():
        orders = partner_orders(clean_sandbox, purchase.id)
        assert len(orders) == 1 and orders[0]["order_id"] == purchase.order_id
