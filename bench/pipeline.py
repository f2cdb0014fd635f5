"""(b) The full pipeline: real `dramatiq workers` + `fulfil scheduler` against the sandbox.

Purchases are submitted with `fulfilment.publish.Publisher`; a purchase is done when it
reaches AWAITING_TRANSFER (the sandbox never completes transfers here).  Durations are on
the database clock: throughput = N / (last awaiting_transfer transition - clock just
before the first submit); latency = awaiting_transfer transition - received transition
(both `purchase_transitions.created_at`, i.e. each transaction's start time), and also
from the moment the purchase's submit was confirmed (time in the intake queue included).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from bench import costs, procfs, stats
from bench.infra import (
    PIPELINE_SETTINGS,
    BenchError,
    DatabaseLike,
    VhostLike,
    alive_check,
    app_env,
    db_now,
    fresh_database,
    fresh_vhost,
    poll_until_done,
    start_consuming,
    start_sandbox,
    stop_on_exit,
)
from fulfilment.publish import Publisher
from fulfilment.settings import QueueSettings
from tests.support.processes import WORKER_QUEUES, ManagedProcess, start_scheduler, start_workers
from tests.support.sandbox import Sandbox

# Where a run's database and vhost live, and the settings that go with them (bench/ha.py).
Target = Callable[[contextlib.ExitStack, str], tuple[Any, Any, dict[str, str]]]

# States a purchase must not reach in a fault-free run: the benchmark stops and says so.
BAD_STATES = ("failed", "paused", "stalled", "needs_attention", "order_unknown", "cancelled", "transfer_expired")


@dataclass
class RunningPipeline:
    env: dict[str, str]
    conn: costs.CountingConnection
    sandbox: Sandbox
    workers: ManagedProcess
    scheduler: ManagedProcess
    publisher: Publisher
    database: DatabaseLike
    vhost: VhostLike

    def alive(self) -> None:
        alive_check(self.workers, self.scheduler)()
        if self.sandbox.process is None or self.sandbox.process.poll() is not None:
            raise BenchError("the sandbox died")

    def submit(self, prefix: str, count: int) -> dict[str, float]:
        """Submit `count` purchases; returns request_id -> epoch when RabbitMQ confirmed it."""
        confirmed: dict[str, float] = {}
        for i in range(count):
            request_id = f"{prefix}-{i}"
            self.submit_one(request_id)
            confirmed[request_id] = time.time()
        return confirmed

    def submit_one(self, request_id: str) -> None:
        """Submit one purchase; returns once RabbitMQ confirmed it."""
        deadline = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.publisher.submit({
            "request_id": request_id, "event_id": "5496123", "section_name": "101", "quantity": 2,
            "delivery_type": "mobile_transfer", "delivery_deadline": deadline,
        })

    def wait_outbox_drained(self, timeout: float = 120) -> None:
        """Until the scheduler has relayed every event written so far (what the purchases cost
        includes their events' publishing)."""
        def published() -> int:
            row = self.conn.execute("SELECT count(*) FROM outbox_events WHERE published_at IS NULL").fetchone()
            return 0 if row is None or row[0] else 1

        poll_until_done(published, 1, what="the outbox relay", timeout=timeout, stall_timeout=timeout,
                        alive=self.alive, interval=0.25)

    def states(self, prefix: str) -> dict[str, int]:
        rows = self.conn.execute("SELECT state, count(*) FROM purchases WHERE request_id LIKE %s GROUP BY state",
                                 (f"{prefix}-%",)).fetchall()
        return {state: int(count) for state, count in rows}

    def wait_awaiting(self, prefix: str, count: int, *, timeout: float, stall_timeout: float = 120,
                      alive: Callable[[], None] | None = None) -> None:
        def awaiting() -> int:
            states = self.states(prefix)
            bad = {s: n for s, n in states.items() if s in BAD_STATES}
            if bad:
                raise BenchError(f"purchases {prefix}-* reached {bad}; see {self.workers.log_path}")
            return states.get("awaiting_transfer", 0)

        poll_until_done(awaiting, count, what=f"purchases {prefix}-* to awaiting_transfer", timeout=timeout,
                        stall_timeout=stall_timeout, alive=alive or self.alive, interval=0.25)

    def timings(self, prefix: str, submitted: dict[str, float]) -> Timings:
        """Per-purchase latencies (s) and the epoch of the last awaiting_transfer transition."""
        rows = self.conn.execute(
            """
            SELECT p.request_id, extract(epoch FROM r.created_at)::float8, extract(epoch FROM a.created_at)::float8
              FROM purchases AS p
              JOIN purchase_transitions AS r ON r.purchase_id = p.id AND r.from_state IS NULL
              JOIN purchase_transitions AS a ON a.purchase_id = p.id AND a.to_state = 'awaiting_transfer'
             WHERE p.request_id LIKE %s
            """,
            (f"{prefix}-%",),
        ).fetchall()
        if len(rows) != len(submitted):
            raise BenchError(f"{len(rows)} purchases {prefix}-* reached awaiting_transfer, {len(submitted)} submitted")
        return Timings(from_received=[awaiting - received for _, received, awaiting in rows],
                       from_submit=[awaiting - submitted[request_id] for request_id, _, awaiting in rows],
                       last=max(awaiting for _, _, awaiting in rows))


class Timings(NamedTuple):
    """Seconds to AWAITING_TRANSFER per purchase, from its RECEIVED transition (DB clock) and from
    the moment its submit was confirmed (this host's clock: Postgres runs on it, same clock)."""

    from_received: list[float]
    from_submit: list[float]
    last: float  # epoch of the last awaiting_transfer transition


_REDRIVE_LOG = re.compile(r"^scheduler redrive: (\d+) in ")


def redriven(scheduler_log: Path) -> int:
    """How many steps the scheduler re-sent (its "scheduler redrive: N in ..." log lines)."""
    total = 0
    for line in scheduler_log.read_text(errors="replace").splitlines():
        try:
            message = json.loads(line).get("message", "")
        except ValueError:
            continue
        match = _REDRIVE_LOG.match(message)
        if match:
            total += int(match.group(1))
    return total


@contextlib.contextmanager
def running_pipeline(name: str, *, processes: int, threads: int, log_dir: Path,
                     target: Target | None = None) -> Iterator[RunningPipeline]:
    """A fresh database, vhost and sandbox, with workers and the scheduler running; all torn down after.
    `target` puts the database and vhost elsewhere (bench/ha.py: the HA stack), with settings of its own."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        extra: dict[str, str] = {}
        if target is None:
            database, vhost = fresh_database(stack, f"fulfil_bench_{name}"), fresh_vhost(stack, f"fulfil_bench_{name}")
        else:
            database, vhost, extra = target(stack, name)
        sandbox = start_sandbox(stack, log_dir)
        env = app_env(database, vhost, sandbox.url, log_dir, {**PIPELINE_SETTINGS, **extra})
        scheduler = stop_on_exit(stack, start_scheduler(env, log_dir, name=f"{name}-scheduler"))
        workers = start_consuming(stack, lambda again: start_workers(
            env, log_dir, processes=processes, threads=threads, name=f"{name}-workers{again}"),
            vhost.url, WORKER_QUEUES, expected=processes)
        conn = stack.enter_context(costs.connect(database.dsn))
        # Queues declared as the run's workers declare them (quorum on the HA stack).
        queues = QueueSettings.model_validate({key.lower(): value for key, value in env.items()
                                               if key in ("BROKER_QUEUE_TYPE", "BROKER_DELIVERY_LIMIT")})
        publisher = Publisher(vhost.url, queues=queues)
        stack.callback(publisher.close)
        yield RunningPipeline(env, conn, sandbox, workers, scheduler, publisher, database, vhost)


def run(*, purchases: int, warmup: int, processes: int, threads: int, log_dir: Path,
        settle_seconds: float = costs.SETTLE_SECONDS, target: Target | None = None) -> dict[str, Any]:
    with running_pipeline("pipe", processes=processes, threads=threads, log_dir=log_dir, target=target) as pipe:
        if warmup:
            pipe.submit("warm", warmup)
            pipe.wait_awaiting("warm", warmup, timeout=180)
        pipe.wait_outbox_drained()
        window = costs.CostWindow(pipe.database.name, pipe.vhost.name, pipe.conn, settle_seconds=settle_seconds)
        window.begin()
        cpu = procfs.CpuWindow({
            "workers": procfs.tree(pipe.workers.pid),
            "scheduler": [pipe.scheduler.pid],
            "sandbox": [pipe.sandbox.process.pid] if pipe.sandbox.process else [],
            "bench": [os.getpid()],
        })
        started = db_now(pipe.conn)
        wall = time.monotonic()
        submitted = pipe.submit("run", purchases)
        submit_s = time.monotonic() - wall
        pipe.wait_awaiting("run", purchases, timeout=120 + purchases * 1.0)
        usage = cpu.finish()
        timings = pipe.timings("run", submitted)
        duration = timings.last - started
        pipe.wait_outbox_drained()
        per_purchase = window.finish(purchases)
        return {
            "purchases": purchases,
            "duration_s": round(duration, 3),
            "per_s": purchases / duration,
            "submit_s": round(submit_s, 3),
            "latency": stats.latency_summary(timings.from_received),
            "latency_from_submit": stats.latency_summary(timings.from_submit),
            "scheduler_redriven": redriven(pipe.scheduler.log_path),
            "costs": per_purchase,
            **usage,
        }
