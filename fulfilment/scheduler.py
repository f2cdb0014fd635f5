"""`fulfil scheduler`: one live instance drives everything time-based from Postgres.

Leadership is a Postgres advisory lock held on a dedicated connection: a second
instance waits as a standby and takes over within a few seconds when the first dies
(its connection closes, the lock is released).  Each tick runs bounded,
index-backed jobs; the main one re-drives every live purchase whose next action is
due — a lost message, a killed worker or a broker restart therefore only delays a
purchase (design invariant 2).  Transfer checks are the same mechanism: the next
check time of an AWAITING_TRANSFER purchase is its `next_action_at`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, text

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
        SELECT id
          FROM purchases
         WHERE next_action_at <= now()
           AND state = ANY(:live_states)
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


@dataclass
class TickReport:
    redriven: dict[str, int] = field(default_factory=dict)
    send_failures: int = 0
    seconds: float = 0.0


def redrive_due(settings: Settings, send: Send) -> TickReport:
    """Send the next step of every live purchase whose next action is due (one batch)."""
    report = TickReport()
    started = time.monotonic()
    with session_scope() as session:
        rows = session.execute(
            REDRIVE_SQL,
            {
                "live_states": [state.value for state in NEXT_STEP],
                "renudge_seconds": settings.redrive_after_seconds,
                "batch": settings.scheduler_batch_size,
            },
        ).all()
    for purchase_id, state in rows:
        step = NEXT_STEP[state]  # type: ignore[index]
        try:
            send(step, purchase_id)
        except Exception:  # noqa: BLE001  nudged_at makes it due again after redrive_after_seconds
            report.send_failures += 1
            log.warning("could not send %s for purchase %s", step, purchase_id, exc_info=True)
            continue
        report.redriven[step] = report.redriven.get(step, 0) + 1
    report.seconds = time.monotonic() - started
    return report


class Scheduler:
    def __init__(self, settings: Settings, send: Send, *, jobs: list[Callable[[Settings, Send], TickReport]] | None = None):
        self.settings = settings
        self.send = send
        self.jobs = jobs or [redrive_due]
        self.stopping = threading.Event()
        self.is_leader = False

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        """Wait for leadership, tick while leading, go back to waiting if the lock is lost."""
        while not self.stopping.is_set():
            try:
                with get_engine().connect() as lock_connection:
                    lock_connection = lock_connection.execution_options(isolation_level="AUTOCOMMIT")
                    if not self._try_lock(lock_connection):
                        self._wait(1.0)
                        continue
                    self.is_leader = True
                    log.info("scheduler: leading (advisory lock %#x held)", SCHEDULER_LOCK_KEY)
                    try:
                        self._lead(lock_connection)
                    finally:
                        self.is_leader = False
            except Exception:  # noqa: BLE001  database gone: stand by and try again
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

    def tick(self) -> list[TickReport]:
        reports = []
        for job in self.jobs:
            try:
                report = job(self.settings, self.send)
            except Exception:  # noqa: BLE001  one failing job must not stop the others
                log.exception("scheduler job %s failed", job.__name__)
                continue
            if report.redriven or report.send_failures:
                log.info("scheduler %s: %s in %.3fs", job.__name__, report.redriven or "", report.seconds)
            reports.append(report)
        return reports

    @staticmethod
    def _try_lock(connection: Connection) -> bool:
        return bool(connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": SCHEDULER_LOCK_KEY}).scalar())

    def _wait(self, seconds: float) -> None:
        self.stopping.wait(seconds)
