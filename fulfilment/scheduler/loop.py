"""The scheduler itself: wait for leadership, run the due jobs each tick while leading, stand by again
when the lock is lost."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from fulfilment import metrics
from fulfilment.outages import DATABASE
from fulfilment.scheduler.leadership import SCHEDULER_LOCK_KEY, LeaderLease, LostLeadership, check_lease, one_line
from fulfilment.settings import Settings

log = logging.getLogger(__name__)


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
        check_lease(settings)
        self.settings = settings
        self.jobs = jobs
        self.stopping = threading.Event()
        self.is_leader = False
        self.lease = LeaderLease(settings)

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        """Wait for leadership, tick while leading, go back to waiting if the lock is lost."""
        log.info("scheduler: starting as standby")
        poll = min(1.0, self.lease.heartbeat_seconds)
        try:
            while not self.stopping.is_set():
                try:
                    acquired = self.lease.try_acquire()
                except (psycopg.Error, OSError) as error:
                    DATABASE.failed(f"scheduler: cannot reach the database ({one_line(error)}); standing by")
                    self.lease.close()
                    self._wait(2.0)
                    continue
                DATABASE.recovered()
                if not acquired:
                    self._wait(poll)
                    continue
                self._set_leader(True)
                log.info("scheduler: leading (advisory lock %#x held, %gs lease, lock session pid %s)",
                         SCHEDULER_LOCK_KEY, self.lease.seconds, self.lease.backend_pid)
                failed = False
                try:
                    self._lead()
                except LostLeadership as lost:
                    self._set_leader(False)
                    log.warning("scheduler: lost leadership (%s); stepping down to standby, no further job", lost)
                except Exception:
                    self._set_leader(False)
                    log.warning("scheduler: failed while leading; stepping down to standby", exc_info=True)
                    failed = True
                finally:
                    self._set_leader(False)
                    self.lease.step_down("stopping" if self.stopping.is_set() else "stepping down")
                if failed:
                    self._wait(2.0)
        finally:
            self.lease.close()
        log.info("scheduler: stopped")

    def _set_leader(self, leading: bool) -> None:
        self.is_leader = leading
        metrics.set_scheduler_leader(leading)  # a standby exports no purchase/queue gauges

    def _lead(self) -> None:
        while not self.stopping.is_set():
            self.tick(before_job=self.lease.confirm)
            self._wait(self.settings.scheduler_interval_seconds, leading=True)

    def tick(self, before_job: Callable[[], None] | None = None) -> dict[str, int]:
        """Run every due job once. `before_job` may veto the next one by raising (LostLeadership)."""
        done: dict[str, int] = {}
        for job in self.jobs:
            if not job.due(time.monotonic()):
                continue
            if before_job is not None:
                before_job()
            log.debug("scheduler %s: starting", job.name)
            started = time.monotonic()
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

    def _wait(self, seconds: float, *, leading: bool = False) -> None:
        """Sleep until stopped; while leading, wake up as soon as the lease is lost (raises LostLeadership)."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set():
            if leading:
                self.lease.alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.stopping.wait(min(remaining, 0.1))
