"""`fulfil scheduler`: one live instance drives everything time-based from Postgres.

Leadership is a Postgres advisory lock held on a dedicated connection: a second
instance waits as a standby and takes over within a few seconds when the first dies
(its connection closes, the lock is released).  Each tick runs bounded,
index-backed jobs:

- redrive: every live purchase whose next action is due gets its step sent again —
  a lost message, a killed worker or a broker restart only delays a purchase
  (invariant 2).  Due transfer checks are the same thing: the next check time of an
  AWAITING_TRANSFER purchase is its `next_action_at`.
- deadlines: near-deadline warnings (fulfilment/deadlines.py);
- outbox: the event relay (fulfilment/outbox.py);
- gauges: the numbers operators watch (fulfilment/metrics.py).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, text

from fulfilment import metrics
from fulfilment.db import get_engine, session_scope
from fulfilment.settings import Settings
from fulfilment.state_machine import NEXT_STEP

log = logging.getLogger(__name__)

# An arbitrary, fixed 64-bit key: "fulfil scheduler".
SCHEDULER_LOCK_KEY = 0x66756C66696C5348

Send = Callable[[str, uuid.UUID], None]

REDRIVE_SQL = text(
    """
    WITH due AS (
        -- Only live purchases carry a next_action_at (state_machine.transition enforces it),
        -- so the partial index alone, read in order, finds the batch and stops at the LIMIT.
        SELECT id
          FROM purchases
         WHERE next_action_at <= now()
           AND (claimed_until IS NULL OR claimed_until < now())
           AND (nudged_at IS NULL OR nudged_at < now() - make_interval(secs => :renudge_seconds))
         ORDER BY next_action_at
         LIMIT :batch
           FOR UPDATE SKIP LOCKED
    )
    UPDATE purchases AS p
       SET nudged_at = now()
      FROM due
     WHERE p.id = due.id
 RETURNING p.id, p.state
    """
)


def redrive_due(settings: Settings, send: Send) -> int:
    """Send the next step of every live purchase whose next action is due (one batch)."""
    with session_scope() as session:
        rows = session.execute(
            REDRIVE_SQL,
            {"renudge_seconds": settings.redrive_after_seconds, "batch": settings.scheduler_batch_size},
        ).all()
    sent = 0
    for purchase_id, state in rows:
        step = NEXT_STEP.get(state)  # type: ignore[call-overload]
        if step is None:  # cannot happen while transition() keeps next_action_at for live states only
            log.error("purchase %s is %s but has a next action; not re-driven", purchase_id, state)
            continue
        try:
            send(step, purchase_id)
        except Exception:
            log.warning("could not send %s for purchase %s", step, purchase_id, exc_info=True)
            continue
        sent += 1
    return sent


@dataclass
class Job:
    name: str
    run: Callable[[], int]  # returns how many things it did
    every_seconds: float = 0.0  # 0: every tick; otherwise at most this often
    last_run: float = float("-inf")

    def due(self, now: float) -> bool:
        return now - self.last_run >= self.every_seconds


class Scheduler:
    def __init__(self, settings: Settings, jobs: list[Job]) -> None:
        self.settings = settings
        self.jobs = jobs
        self.stopping = threading.Event()
        self.is_leader = False

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        """Wait for leadership, tick while leading, go back to waiting if the lock is lost."""
        log.info("scheduler: starting as standby")
        while not self.stopping.is_set():
            try:
                with get_engine().connect() as lock_connection:
                    lock_connection = lock_connection.execution_options(isolation_level="AUTOCOMMIT")
                    if not self._try_lock(lock_connection):
                        self._wait(1.0)
                        continue
                    self.is_leader = True
                    metrics.SCHEDULER_LEADER.set(1)
                    log.info("scheduler: leading (advisory lock %#x held)", SCHEDULER_LOCK_KEY)
                    try:
                        self._lead(lock_connection)
                    finally:
                        self.is_leader = False
                        metrics.SCHEDULER_LEADER.set(0)
            except Exception:
                log.warning("scheduler: lost the database; standing by", exc_info=True)
                self._wait(2.0)
        log.info("scheduler: stopped")

    def _lead(self, lock_connection: Connection) -> None:
        while not self.stopping.is_set():
            # Proves the lock's connection is still alive: if it died, so did our lock.
            lock_connection.execute(text("SELECT 1"))
            self.tick()
            self._wait(self.settings.scheduler_interval_seconds)
        lock_connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEDULER_LOCK_KEY})

    def tick(self) -> dict[str, int]:
        done: dict[str, int] = {}
        for job in self.jobs:
            started = time.monotonic()
            if not job.due(started):
                continue
            job.last_run = started
            try:
                done[job.name] = job.run()
            except Exception:
                log.exception("scheduler job %s failed", job.name)
                continue
            finally:
                metrics.SCHEDULER_JOB_SECONDS.labels(job.name).observe(time.monotonic() - started)
            if done[job.name]:
                log.info("scheduler %s: %d in %.3fs", job.name, done[job.name], time.monotonic() - started)
        return done

    @staticmethod
    def _try_lock(connection: Connection) -> bool:
        return bool(connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": SCHEDULER_LOCK_KEY}).scalar())

    def _wait(self, seconds: float) -> None:
        self.stopping.wait(seconds)


LIVE_COUNTS_SQL = text(
    """
    SELECT state, count(*), min(next_action_at) FILTER (WHERE claimed_until IS NULL OR claimed_until < now())
      FROM purchases
     WHERE state = ANY(:states)
     GROUP BY state
    """
)


def update_gauges(settings: Settings, queue_depths: Callable[[], dict[str, int]] | None = None) -> int:
    """Refresh the operator gauges from non-terminal purchases only (index-backed, cheap at any history size)."""
    from fulfilment.state_machine import HELD_FOR_OPERATOR

    watched = [s.value for s in (*NEXT_STEP, *HELD_FOR_OPERATOR)]
    with session_scope() as session:
        rows = session.execute(LIVE_COUNTS_SQL, {"states": watched}).all()
        now = session.execute(text("SELECT now()")).scalar_one()
    counts = {state: 0 for state in watched}
    oldest = None
    for state, count, due in rows:
        counts[state] = count
        if state in NEXT_STEP and due is not None and (oldest is None or due < oldest):
            oldest = due
    for state, count in counts.items():
        metrics.PURCHASES_BY_STATE.labels(state).set(count)
    metrics.STALLED.set(sum(counts[s.value] for s in HELD_FOR_OPERATOR))
    metrics.SCHEDULER_LAG.set(max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
    if queue_depths is not None:
        for queue, depth in queue_depths().items():
            metrics.DEAD_LETTERS.labels(queue).set(depth)
    return 0
