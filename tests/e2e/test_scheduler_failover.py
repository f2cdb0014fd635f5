"""Issue 7: a frozen scheduler leader (SIGSTOP) loses its lock to the standby, and steps down when it wakes.

Two real `fulfil scheduler` processes and real workers, with a 5 s lease.  The leader is
stopped with SIGSTOP: the standby must lead within the lease (Postgres ends the frozen
leader's idle lock session) and do the leader's work (transfer checks and the event relay
for a new purchase).  Woken with SIGCONT, the old leader must log that it lost leadership
and start no job while the other one leads; it logs each job start at DEBUG to prove it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from fulfilment.db import session_scope
from fulfilment.publish import Publisher
from models import OutboxEvent
from tests.support.factories import request
from tests.support.pipeline import in_states, wait_until
from tests.support.processes import ManagedProcess, start_scheduler, start_workers, wait_for_consumers
from tests.support.sandbox import Sandbox
from tests.support.servers import free_port

LEASE = 5


def fresh_log(log_dir: Path, name: str) -> str:
    """ManagedProcess appends to its log: start from an empty one even when FULFIL_TEST_LOG_DIR is reused."""
    (log_dir / f"{name}.log").unlink(missing_ok=True)
    return name


class Log:
    """A process's JSON log lines, or those written after a byte offset."""

    def __init__(self, process: ManagedProcess) -> None:
        self.process = process

    def size(self) -> int:
        try:
            return self.process.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def messages(self, since: int = 0) -> list[str]:
        try:
            with open(self.process.log_path, "rb") as file:
                file.seek(since)
                lines = file.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        found = []
        for line in lines:
            try:
                found.append(str(json.loads(line).get("message", "")))
            except (ValueError, AttributeError):
                found.append(line)
        return found

    def has(self, text: str, since: int = 0) -> bool:
        return any(text in message for message in self.messages(since))


def job_starts(messages: list[str]) -> list[str]:
    return [m for m in messages if m.startswith("scheduler ") and m.endswith(": starting")]


def leader_gauge(port: int) -> float | None:
    try:
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.TransportError:
        return None
    for line in body.splitlines():
        if line.startswith("fulfil_scheduler_leader "):
            return float(line.split()[1])
    return None


def wait_for(predicate: Callable[[], object], timeout: float, what: str, *logs: Log) -> float:
    """Seconds it took; fails with the logs' tails."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.1)
    tails = "\n".join(f"--- {log.process.name}:\n{log.process.log_tail(30)}" for log in logs)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")


@pytest.fixture
def processes(app_env: dict[str, str], log_dir: Path) -> Iterator[dict[str, ManagedProcess]]:
    env = {**app_env, "SCHEDULER_LEADER_LEASE_SECONDS": str(LEASE), "REDRIVE_AFTER_SECONDS": "2"}
    started: dict[str, ManagedProcess] = {}
    try:
        started["workers"] = start_workers(env, log_dir, name=fresh_log(log_dir, "failover-workers"))
        # The first scheduler logs every job start (DEBUG): the proof that it starts none after waking up.
        started["a"] = start_scheduler({**env, "METRICS_PORT": str(free_port()), "LOG_LEVEL": "DEBUG"}, log_dir,
                                       name=fresh_log(log_dir, "failover-scheduler-a"))
        wait_for_consumers(env["BROKER_URL"], started["workers"], expected=2)
        yield started
    finally:
        for process in started.values():
            if process.alive():
                os.kill(process.pid, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        for name in ("b", "a", "workers"):
            if name in started:
                started[name].stop()


def test_frozen_leader_loses_the_lock_to_the_standby_and_steps_down_when_woken(
    processes: dict[str, ManagedProcess], app_env: dict[str, str], clean_sandbox: Sandbox, log_dir: Path
) -> None:
    a = processes["a"]
    a_log = Log(a)
    wait_for(lambda: a_log.has("scheduler: leading"), 30, "the first scheduler to lead", a_log)
    a_port = int(a.env["METRICS_PORT"])

    b_port = free_port()
    b = processes["b"] = start_scheduler({**a.env, "METRICS_PORT": str(b_port), "LOG_LEVEL": "INFO"}, log_dir,
                                         name=fresh_log(log_dir, "failover-scheduler-b"))
    b_log = Log(b)
    wait_for(lambda: leader_gauge(b_port) is not None and b_log.has("starting as standby"), 30,
             "the second scheduler to stand by", b_log)
    time.sleep(1.5)
    assert leader_gauge(a_port) == 1.0 and leader_gauge(b_port) == 0.0
    assert not b_log.has("scheduler: leading")
    assert job_starts(a_log.messages()), "the leader runs its jobs"

    # Freeze the leader: its threads (heartbeat included) stop, its lock session goes idle.
    os.kill(a.pid, signal.SIGSTOP)
    took_over = wait_for(lambda: b_log.has("scheduler: leading"), 40, "the standby to take over", a_log, b_log)
    assert took_over < LEASE + 5, f"took {took_over:.1f}s with a {LEASE}s lease"

    # The new leader does the leader's work: transfer checks only it schedules, and the event relay.
    with_b = b_log.size()
    publisher = Publisher(app_env["BROKER_URL"])
    try:
        purchase_id = publisher.submit(request())
    finally:
        publisher.close()
    wait_until([purchase_id], in_states("transfer_complete"), timeout=40)

    def all_events_relayed() -> bool:
        with session_scope() as session:
            sent = list(session.scalars(select(OutboxEvent.published_at).where(OutboxEvent.purchase_id == purchase_id)))
        return bool(sent) and all(at is not None for at in sent)

    wait_for(all_events_relayed, 15, "the purchase's events to be published", b_log)
    assert b_log.has("scheduler redrive:", since=with_b) and b_log.has("scheduler outbox:", since=with_b)
    assert a.alive()  # still frozen, never killed

    # Wake the old leader: it must notice before starting any job, and stand by.
    woken_at = a_log.size()
    os.kill(a.pid, signal.SIGCONT)
    wait_for(lambda: a_log.has("lost leadership", since=woken_at), 10, "the woken leader to step down", a_log)
    time.sleep(3)  # a few standby polls: it stays a standby while the other leads
    after_wake = a_log.messages(since=woken_at)
    assert not job_starts(after_wake), f"the woken leader started jobs: {job_starts(after_wake)}"
    assert not any("scheduler: leading" in m for m in after_wake), after_wake
    assert leader_gauge(a_port) == 0.0 and leader_gauge(b_port) == 1.0
    assert b.alive() and not b_log.has("lost leadership")
