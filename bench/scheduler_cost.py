"""(d) What one scheduler tick costs with 10k / 100k / 1M purchases in history.

One database (dropped at the end), loaded in stages by bench/history.py.  At each size,
each job runs in this process against it, as the scheduler would run it, with stubs
where it would talk to RabbitMQ (a `send` and an event publisher that only count):

  redrive    fulfilment.scheduler.redrive_due            (REDRIVE_SQL)
  deadlines  fulfilment.deadlines.flag_near_deadlines    (DUE_FLAGS_SQL)
  outbox     fulfilment.rabbitmq.outbox.relay_outbox              (its SELECT ... FOR UPDATE SKIP LOCKED)
  gauges     fulfilment.scheduler.update_gauges          (LIVE_COUNTS_SQL)

A first, untimed run of each job captures its SQL (then explained, see bench/plans.py);
then `ticks` timed runs.  After every run the state it changed is put back (nudged_at,
published_at, deadline_flags), so each timed tick does the same work: the due batch.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import psycopg
from sqlalchemy import event

from bench import history, plans, stats
from bench.infra import BenchError, fresh_database

if TYPE_CHECKING:
    from fulfilment.rabbitmq.outbox import EventPublisher

JOB_SQL = {  # job -> (the SQL it is named by, a fragment proving we captured that statement)
    "redrive": ("fulfilment.scheduler.REDRIVE_SQL", "WITH due AS"),
    "deadlines": ("fulfilment.deadlines.DUE_FLAGS_SQL", "unnest("),
    "outbox": ("fulfilment.rabbitmq.outbox.relay_outbox (SELECT outbox_events ... FOR UPDATE SKIP LOCKED)", "FROM outbox_events"),
    "gauges": ("fulfilment.scheduler.LIVE_COUNTS_SQL", "GROUP BY state"),
}


class CountingPublisher:
    """Stands in for fulfilment.rabbitmq.outbox.EventPublisher: remembers what it was asked to publish."""

    def __init__(self) -> None:
        self.ids: list[uuid.UUID] = []

    def publish(self, event_id: uuid.UUID, routing_key: str, payload: dict[str, object]) -> None:
        self.ids.append(event_id)

    def close(self) -> None:
        pass


@contextlib.contextmanager
def configured(database_url: str) -> Iterator[Any]:
    """This process's settings point at the bench database (restored afterwards)."""
    from fulfilment.settings import get_settings

    saved = dict(os.environ)
    os.environ.update({
        "DATABASE_URL": database_url,
        "BROKER_URL": "amqp://unused:unused@127.0.0.1:1/unused",  # every job's broker side is stubbed
        "TBB_BASE_URL": "http://127.0.0.1:1",
        "TBB_CLIENT_ID": "bench",
        "TBB_CLIENT_SECRET": "bench",
    })
    get_settings.cache_clear()
    try:
        yield get_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


@contextlib.contextmanager
def captured_statements() -> Iterator[list[tuple[str, Any]]]:
    from fulfilment.db import get_engine

    engine = get_engine()
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _jobs(settings: Any, conn: psycopg.Connection) -> dict[str, tuple[Callable[[], int], Callable[[], None]]]:
    """job name -> (run it once, put back what it changed)."""
    from fulfilment.deadlines import flag_near_deadlines
    from fulfilment.rabbitmq.outbox import relay_outbox
    from fulfilment.scheduler import redrive_due, update_gauges

    sent: list[uuid.UUID] = []
    publisher = CountingPublisher()

    def redrive() -> int:
        return redrive_due(settings, lambda step, purchase_id: sent.append(purchase_id))

    def undo_redrive() -> None:
        conn.execute("UPDATE purchases SET nudged_at = NULL WHERE id = ANY(%s)", (sent,))
        sent.clear()

    def outbox() -> int:
        return relay_outbox(cast("EventPublisher", publisher), batch_size=settings.scheduler_batch_size,
                            ticket_key=settings.ticket_key)

    def undo_outbox() -> None:
        conn.execute("UPDATE outbox_events SET published_at = NULL WHERE id = ANY(%s)", (publisher.ids,))
        publisher.ids.clear()

    def deadlines() -> int:
        return flag_near_deadlines(settings.deadline_warning_hours, batch_size=settings.scheduler_batch_size)

    def undo_deadlines() -> None:
        # The flags go; their history rows stay (append-only), their events are marked sent.
        conn.execute("DELETE FROM deadline_flags")
        conn.execute("UPDATE outbox_events SET published_at = now() "
                     "WHERE published_at IS NULL AND routing_key = 'purchase.deadline_near'")

    def gauges() -> int:
        update_gauges(settings)
        return 0

    # Order matters: deadlines add events, so they run after the outbox was measured.
    return {
        "redrive": (redrive, undo_redrive),
        "outbox": (outbox, undo_outbox),
        "gauges": (gauges, lambda: None),
        "deadlines": (deadlines, undo_deadlines),
    }


def measure(dsn: str, settings: Any, ticks: int) -> dict[str, Any]:
    jobs: dict[str, Any] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, (run_job, undo) in _jobs(settings, conn).items():
            with captured_statements() as seen:
                items = run_job()
            undo()
            if not seen or JOB_SQL[name][1] not in seen[0][0]:
                raise BenchError(f"scheduler job {name}: did not capture its query (saw {seen[:1]})")
            plan = plans.explain(dsn, seen[0][0], seen[0][1])
            durations, done = [], []
            for _ in range(ticks):
                started = time.perf_counter()
                done.append(run_job())
                durations.append((time.perf_counter() - started) * 1000)
                undo()
            jobs[name] = {
                "sql": JOB_SQL[name][0],
                "ms": {**stats.spread(durations), "all": [round(d, 2) for d in durations]},
                "items_per_tick": stats.median(done),
                "first_run_items": items,
                "plan": plan,
            }
    return jobs


def run(*, sizes: list[int], ticks: int) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        database = fresh_database(stack, "fulfil_bench_sched")
        settings = stack.enter_context(configured(database.url))
        loaded = 0
        for size in sorted(sizes):
            if size <= loaded:
                continue
            timings = history.load(database.dsn, loaded + 1, size)
            loaded = size
            jobs = measure(database.dsn, settings, ticks)
            results.append({
                "purchases": size,
                "loaded": {**timings, "rows": history.counts(database.dsn)},
                "jobs": jobs,
                "tick_ms": sum(job["ms"]["median"] for job in jobs.values()),
                "seq_scans_on_watched": {name: job["plan"]["seq_scans_on_watched"]
                                         for name, job in jobs.items() if job["plan"]["seq_scans_on_watched"]},
            })
    return {"batch_size": settings.scheduler_batch_size, "ticks": ticks,
            "deadline_warning_hours": list(settings.deadline_warning_hours), "sizes": results}
