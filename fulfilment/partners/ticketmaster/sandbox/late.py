"""Commits, including the ones a ``late_*`` fault answers 5xx and processes anyway (see ``faults``).

``LateCommits.commit`` is what the commit handler calls once the body is valid. Under the state lock
it asks the store whether the commit would succeed now (``can_commit``: nothing changed or counted)
and only then the fault book (``late_commit``):

- no late fault: the normal commit (the order view, or its ``TMError`` exactly as before);
- ``late_ms == 0``: the commit is made now, then ``InjectedAnswer`` makes the pipeline answer the 5xx;
- ``late_ms > 0``: nothing is done now; an asyncio task in the running loop sleeps ``late_ms`` and
  then makes the commit with the request parsed at call time, validated again at that moment, as
  the real system would. A cart that can no longer be committed (expired, deleted, committed by a
  retry meanwhile...) is left as it is and ``late_commits_failed`` counted; else the commit takes
  effect like any other (order with its ``source_account_id``, cart committed, seats sold,
  ``orders_per_source_account``) and ``commits_processed_late`` is counted.

The delayed commit is no cart call: it never enters ``cart_calls`` (it runs in one step under the
lock), and the call that asked for it leaves the cart's in-flight set when its 5xx is sent.

Tasks are kept in a set (asyncio only holds weak references to them). ``reset`` (admin reset) moves
to a new generation, so a commit pending from before never takes effect, and cancels the tasks
thread-safely (the admin call may run in another thread or loop than the task). A task whose loop
ends before ``late_ms`` passed (uvicorn stopping, Starlette's TestClient outside ``with``: one loop
per request) is lost, with a warning in the log.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from .counts import Counters
from .errors import TMError
from .faults import FaultBook, InjectedAnswer
from .store import SandboxStore
from .validation import CommitRequest

logger = logging.getLogger("fulfilment.partners.ticketmaster.sandbox")


class LateCommits:
    def __init__(self, lock: threading.RLock, store: SandboxStore, faults: FaultBook, counters: Counters) -> None:
        self._lock = lock
        self._store = store
        self._faults = faults
        self._counters = counters
        self._generation = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def reset(self) -> None:
        """Forget pending late commits: they never take effect."""
        with self._lock:
            self._generation += 1
            tasks, self._tasks = self._tasks, set()
        for task in tasks:
            try:
                task.get_loop().call_soon_threadsafe(task.cancel)
            except RuntimeError:  # its loop is closed: the task ended with it
                pass

    def pending(self) -> int:
        with self._lock:
            return len(self._tasks)

    def commit(self, apikey: str, event_id: str, request: CommitRequest) -> dict[str, Any]:
        """The order view of a commit made now; ``TMError`` if it cannot be made; ``InjectedAnswer``
        when a late fault applies (the commit then made already, or scheduled)."""
        with self._lock:
            late = self._faults.late_commit("commit") if self._store.can_commit(apikey, event_id, request) else None
            if late is None or late.delay_seconds <= 0:
                view = self._store.commit(apikey, event_id, request)
                if late is None:
                    return view
                self._counters.bump("commits_processed_late")
                raise InjectedAnswer(late.status, late.gateway_body)
            task = asyncio.get_running_loop().create_task(
                self._later(self._generation, late.delay_seconds, apikey, event_id, request))
            self._tasks.add(task)
        task.add_done_callback(self._forget)
        raise InjectedAnswer(late.status, late.gateway_body)

    def _forget(self, task: asyncio.Task[None]) -> None:
        with self._lock:
            self._tasks.discard(task)

    async def _later(self, generation: int, delay: float, apikey: str, event_id: str, request: CommitRequest) -> None:
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            with self._lock:
                current = generation == self._generation
            if current:
                logger.warning("late commit of cart %s lost: its event loop ended before late_ms passed",
                               request.cart_id)
            raise
        self._process(generation, apikey, event_id, request)

    def _process(self, generation: int, apikey: str, event_id: str, request: CommitRequest) -> None:
        with self._lock:
            if generation != self._generation:
                return  # an admin reset came first
            try:
                self._store.commit(apikey, event_id, request, count_refusals=False)
            except TMError as error:
                self._counters.bump("late_commits_failed")
                logger.info("late commit of cart %s failed: %s", request.cart_id, error.message)
                return
            self._counters.bump("commits_processed_late")
