"""Polling (202 ``{"polling_url", "wait"}``) for the endpoints marked "Polling: Yes".

The work is done when the 202 is sent; the outcome is kept in a job under a random id and served by
``GET /partners/v1/polling/<id>`` once ``wait`` seconds (sandbox clock) have passed, after
``repeats`` more 202s. Details and what is ASSUMED: ``assumed.py`` (polling section).

A polling URL dies in two ways: ``polling_ttl_seconds`` (runtime setting, 0 = never) after its job
was created it answers 410 ``POLL_EXPIRED`` for good; ``DELETE /admin/polling/{poll_id}`` forgets
it (404 ``POLL_NOT_FOUND``, like an id that never existed or a restarted sandbox). Stalls and
injected 5xx on polls (``faults``) happen before the job is looked at: they never kill a URL.
"""

from __future__ import annotations

import math
import random
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from fulfilment.partners.sandbox_kit.clock import iso_z

from .responses import Outcome

POLLING_PATH = "/partners/v1/polling/"
PollState = Literal["unknown", "expired", "early", "again", "done"]


@dataclass
class PollJob:
    poll_id: str
    apikey: str
    endpoint: str
    outcome: Outcome
    created_at: datetime
    ready_at: datetime
    repeats_left: int
    cart_id: str | None = None
    polls: int = 0
    early_polls: int = 0
    delivered: int = 0
    expired_polls: int = 0

    def admin_view(self) -> dict[str, Any]:
        return {"poll_id": self.poll_id, "endpoint": self.endpoint, "status": self.outcome.status,
                "created_at": iso_z(self.created_at), "ready_at": iso_z(self.ready_at),
                "repeats_left": self.repeats_left, "polls": self.polls, "early_polls": self.early_polls,
                "delivered": self.delivered, "expired_polls": self.expired_polls}


def polling_body(base_url: str, poll_id: str, wait: int) -> dict[str, Any]:
    return {"polling_url": base_url.rstrip("/") + POLLING_PATH + poll_id, "wait": wait}


class PollingBook:
    def __init__(self, lock: threading.RLock, seed: int) -> None:
        self._lock = lock
        self._rng = random.Random(seed)
        self._jobs: dict[str, PollJob] = {}

    def reset(self, seed: int) -> None:
        with self._lock:
            self._rng = random.Random(seed)
            self._jobs.clear()

    def should_poll(self, forced: bool, rate: float) -> bool:
        if forced:
            return True
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def start(self, apikey: str, endpoint: str, outcome: Outcome, now: datetime, wait: int, repeats: int,
              cart_id: str | None = None) -> PollJob:
        with self._lock:
            poll_id = secrets.token_hex(16).upper()
            job = PollJob(poll_id, apikey, endpoint, outcome, now, now + timedelta(seconds=wait), repeats, cart_id)
            self._jobs[poll_id] = job
            return job

    def endpoint_of(self, poll_id: str) -> str | None:
        with self._lock:
            job = self._jobs.get(poll_id)
            return job.endpoint if job is not None else None

    def forget(self, poll_id: str) -> bool:
        """The URL is gone (404 from now on); False if there was no such job."""
        with self._lock:
            return self._jobs.pop(poll_id, None) is not None

    def poll(self, poll_id: str, apikey: str, now: datetime, wait: int,
             ttl_seconds: float = 0.0) -> tuple[PollState, PollJob | None, int]:
        """(what to answer, the job, the ``wait`` of a 202)."""
        with self._lock:
            job = self._jobs.get(poll_id)
            if job is None or job.apikey != apikey:
                return "unknown", None, 0
            if ttl_seconds > 0 and now >= job.created_at + timedelta(seconds=ttl_seconds):
                job.expired_polls += 1
                return "expired", job, 0
            job.polls += 1
            if now < job.ready_at:
                job.early_polls += 1
                left = max(1, math.ceil((job.ready_at - now).total_seconds()))
                return "early", job, left
            if job.repeats_left > 0:
                job.repeats_left -= 1
                job.ready_at = now + timedelta(seconds=wait)
                return "again", job, wait
            job.delivered += 1
            return "done", job, 0

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [job.admin_view() for job in self._jobs.values()]
