"""(a) The raw dramatiq baseline: N chains of three one-UPDATE actors on real worker processes.

Throughput = N / (last chain's done_at - database clock just before the first enqueue).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bench import RAW_QUEUES as QUEUES
from bench import costs, procfs
from bench.infra import (
    BenchError,
    alive_check,
    db_now,
    fresh_database,
    fresh_vhost,
    poll_until_done,
    start_consuming,
    start_sandbox,
)
from tests.support.processes import ManagedProcess

SCHEMA = """
CREATE TABLE bench_chain (
    id         integer PRIMARY KEY,
    step       integer NOT NULL DEFAULT 0,
    updated_at timestamptz,
    done_at    timestamptz
)
"""


def _message(chain_id: int) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=QUEUES[0], actor_name="step_one", args=(chain_id,), kwargs={}, options={})


def _enqueue(broker: RabbitmqBroker, ids: range) -> None:
    for chain_id in ids:
        broker.enqueue(_message(chain_id))


def run(*, purchases: int, warmup: int, processes: int, threads: int, log_dir: Path,
        settle_seconds: float = costs.SETTLE_SECONDS, with_partner: bool = False) -> dict[str, Any]:
    """with_partner: part g, the floor (bench/raw_actors.py): the chain also quotes and orders
    through the sandbox, as the pipeline does."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        sandbox = start_sandbox(stack, log_dir) if with_partner else None
        database = fresh_database(stack, "fulfil_bench_raw", migrated=False)
        vhost = fresh_vhost(stack, "fulfil_bench_raw")
        conn = stack.enter_context(costs.connect(database.dsn))
        conn.execute(SCHEMA)
        conn.execute("INSERT INTO bench_chain (id) SELECT generate_series(1, %s)", (warmup + purchases,))

        env = {**os.environ, "BENCH_DATABASE_URL": database.url, "BENCH_BROKER_URL": vhost.url}
        if sandbox is not None:
            env["BENCH_PARTNER_URL"] = sandbox.url
        argv = [sys.executable, "-m", "dramatiq", "bench.raw_broker", "bench.raw_actors",
                "--processes", str(processes), "--threads", str(threads)]
        workers = start_consuming(stack, lambda again: ManagedProcess(f"raw-workers{again}", argv, env, log_dir).start(),
                                  vhost.url, QUEUES, expected=processes)
        alive = alive_check(workers)

        broker = RabbitmqBroker(url=vhost.url, confirm_delivery=True, middleware=[])
        stack.callback(broker.close)

        def done_count(first: int, last: int) -> int:
            row = conn.execute("SELECT count(*) FROM bench_chain WHERE id BETWEEN %s AND %s AND done_at IS NOT NULL",
                               (first, last)).fetchone()
            return int(row[0]) if row else 0

        if warmup:
            _enqueue(broker, range(1, warmup + 1))
            poll_until_done(lambda: done_count(1, warmup), warmup, what="raw dramatiq warm-up",
                            timeout=120, stall_timeout=60, alive=alive)

        first, last = warmup + 1, warmup + purchases
        window = costs.CostWindow(database.name, vhost.name, conn, settle_seconds=settle_seconds)
        window.begin()
        cpu = procfs.CpuWindow({"workers": procfs.tree(workers.pid), "bench": [os.getpid()],
                                **({"sandbox": [sandbox.process.pid]} if sandbox and sandbox.process else {})})
        started = db_now(conn)
        wall = time.monotonic()
        _enqueue(broker, range(first, last + 1))
        enqueue_s = time.monotonic() - wall
        poll_until_done(lambda: done_count(first, last), purchases, what="raw dramatiq chains",
                        timeout=60 + purchases * 0.5, stall_timeout=60, alive=alive)
        usage = cpu.finish()
        row = conn.execute("SELECT extract(epoch FROM max(done_at))::float8 FROM bench_chain WHERE id BETWEEN %s AND %s",
                           (first, last)).fetchone()
        if row is None or row[0] is None:
            raise BenchError("raw dramatiq: no done_at recorded")
        duration = float(row[0]) - started
        per_purchase = window.finish(purchases)
        return {
            "purchases": purchases,
            "duration_s": round(duration, 3),
            "per_s": purchases / duration,
            "enqueue_s": round(enqueue_s, 3),
            "costs": per_purchase,
            **usage,
        }
