"""Leadership: a Postgres advisory lock on a session of its own (LeaderLease), proven before every job and
lost within SCHEDULER_LEADER_LEASE_SECONDS when its holder goes silent (the package docstring tells how)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Engine, event, make_url
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from fulfilment.settings import Settings, SettingsError

log = logging.getLogger(__name__)

# An arbitrary, fixed 64-bit key: "fulfil scheduler".
SCHEDULER_LOCK_KEY = 0x66756C66696C5348


def _clock() -> float:
    """Seconds on a clock that keeps running while the process is stopped or the host suspended."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def one_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def lock_connection_params(settings: Settings) -> dict[str, Any]:
    """psycopg.connect() arguments of the lock's session: every way of going silent ends it within the lease."""
    lease = settings.scheduler_leader_lease_seconds
    # The dialect's own translation, which keeps a multi-host URL's hosts and ports (libpq lists):
    # rendering the URL back to a string would keep only its last `host=`.
    _, params = PGDialect_psycopg().create_connect_args(make_url(settings.database_url))
    params = {key: str(value) if key == "port" else value for key, value in params.items()}
    keepalive_idle, keepalive_interval, keepalive_count = max(1, int(lease / 4)), max(1, int(lease / 8)), 3
    server = {
        # A stopped or cut-off leader sends nothing: its idle session, and with it the lock, ends.
        "idle_session_timeout": _ms(lease),
        "idle_in_transaction_session_timeout": _ms(lease),  # the session runs in autocommit; just in case
        "statement_timeout": _ms(lease / 2),
        "lock_timeout": _ms(lease / 2),
        # A vanished leader host: the server's probes go unanswered, it closes the session.
        "tcp_keepalives_idle": keepalive_idle,
        "tcp_keepalives_interval": keepalive_interval,
        "tcp_keepalives_count": keepalive_count,
        "tcp_user_timeout": _ms(lease / 2),
    }
    options = " ".join(filter(None, [params.get("options", ""), *(f"-c {k}={v}" for k, v in server.items())]))
    params.update(
        options=options,
        application_name="fulfil scheduler lock",
        connect_timeout=max(2, int(lease / 2)),
        # The client side of the same: a vanished server ends our session (and our leadership).
        keepalives=1,
        keepalives_idle=keepalive_idle,
        keepalives_interval=keepalive_interval,
        keepalives_count=keepalive_count,
        tcp_user_timeout=_ms(lease / 2),
    )
    return params


def limit_idle_transactions(engine: Engine, seconds: float) -> None:
    """Have Postgres end any transaction of `engine`'s connections left idle longer than `seconds`.

    For the scheduler process: a leader frozen in the middle of a job would otherwise keep its
    batch's rows locked (FOR UPDATE SKIP LOCKED) and out of the new leader's reach for as long
    as the freeze lasts.
    """
    setting = f"-c idle_in_transaction_session_timeout={_ms(seconds)}"

    @event.listens_for(engine, "do_connect")
    def _limit(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        cparams["options"] = " ".join(filter(None, [cparams.get("options"), setting]))


class LostLeadership(Exception):
    """The leader can no longer prove that it holds the lock: it must not start another job."""


LOCK_HELD_SQL = """
    SELECT EXISTS (
        SELECT 1 FROM pg_locks
         WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
           AND classid::bigint = %(high)s AND objid::bigint = %(low)s AND objsubid = 1)
"""


@dataclass
class _Term:
    """One period of leadership: the session holding the lock and until when the lock is proven ours.

    Only the term's heartbeat thread uses `conn`, so a hung connection can delay a proof but
    never blocks the scheduler's own thread: it waits for a proof at most until `valid_until`.
    """

    conn: psycopg.Connection[Any]
    valid_until: float
    ended: threading.Event = field(default_factory=threading.Event)
    reason: str = ""
    wake: threading.Event = field(default_factory=threading.Event)  # a proof is wanted now
    changed: threading.Condition = field(default_factory=threading.Condition)  # guards the fields below
    requested: int = 0  # proofs asked for before a job
    answered: int = 0  # proofs asked for that were done (successful or not)
    heartbeat: threading.Thread | None = None


class LeaderLease:
    """The advisory lock on its own guarded session, and the proof that this process still holds it.

    Leadership is valid until `lease` seconds after the start of the last successful proof (a
    query that found the lock in pg_locks for our session): Postgres cannot end the session, and
    so release the lock, sooner than `idle_session_timeout` = `lease` after that query.
    """

    def __init__(self, settings: Settings, key: int = SCHEDULER_LOCK_KEY) -> None:
        self.seconds = settings.scheduler_leader_lease_seconds
        self.heartbeat_seconds = self.seconds / 4
        self.key = key
        self._params = lock_connection_params(settings)
        self._standby: psycopg.Connection[Any] | None = None
        self.term: _Term | None = None

    @property
    def backend_pid(self) -> int | None:
        """The Postgres backend holding (or polling for) the lock."""
        conn = self.term.conn if self.term is not None else self._standby
        return conn.info.backend_pid if conn is not None and not conn.closed else None

    def try_acquire(self) -> bool:
        """As a standby: take the lock if it is free, and start proving it. Raises if the database is out of reach."""
        if self.term is not None:
            raise RuntimeError("already leading")
        if self._standby is None or self._standby.closed:
            self._standby = psycopg.connect(**self._params, autocommit=True)
        started = _clock()
        row = self._standby.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        if not (row and row[0]):
            return False
        term = _Term(self._standby, valid_until=started + self.seconds)
        self._standby = None
        term.heartbeat = threading.Thread(target=self._beat, args=(term,), name="scheduler-lease", daemon=True)
        self.term = term
        term.heartbeat.start()
        return True

    def alive(self) -> None:
        """Raise LostLeadership if a proof failed or none succeeded within the lease (no query: cheap)."""
        term = self.term
        if term is None:
            raise LostLeadership("not leading")
        now = _clock()
        if now >= term.valid_until:
            self._end(term, f"the lock was last proven {now - term.valid_until + self.seconds:.1f}s ago, "
                            f"more than the {self.seconds:g}s lease (process stopped or lock session stalled)")
        if term.ended.is_set():
            raise LostLeadership(term.reason)

    def confirm(self) -> None:
        """Before a job: have the lock proven ours now, on its session; raise LostLeadership if it is not."""
        self.alive()
        term = self.term
        assert term is not None
        with term.changed:
            term.requested += 1
            mine = term.requested
            term.wake.set()
            while term.answered < mine and not term.ended.is_set():
                remaining = term.valid_until - _clock()
                if remaining <= 0:
                    break
                term.changed.wait(remaining)
        self.alive()

    def step_down(self, reason: str) -> None:
        """End the term: its heartbeat closes the lock's session, which releases the lock."""
        term, self.term = self.term, None
        if term is None:
            return
        self._end(term, reason)
        if term.heartbeat is not None and term.heartbeat is not threading.current_thread():
            # Promptly, unless the heartbeat is stuck on a dead connection: it closes it when it returns.
            term.heartbeat.join(timeout=1.0)

    def close(self) -> None:
        self.step_down("closing")
        if self._standby is not None:
            self._standby.close()
            self._standby = None

    def _beat(self, term: _Term) -> None:
        """The term's thread: prove the lock every quarter lease, and whenever a job is about to start."""
        try:
            while True:
                term.wake.wait(self.heartbeat_seconds)
                term.wake.clear()
                if term.ended.is_set():
                    return
                with term.changed:
                    serving = term.requested
                self._prove(term)
                with term.changed:
                    term.answered = max(term.answered, serving)
                    term.changed.notify_all()
        finally:
            term.conn.close()

    def _prove(self, term: _Term) -> None:
        started = _clock()
        if started >= term.valid_until:
            self._end(term, f"the lock was not proven within the {self.seconds:g}s lease "
                            "(process stopped or lock session stalled)")
            return
        try:
            row = term.conn.execute(LOCK_HELD_SQL, {"high": self.key >> 32, "low": self.key & 0xFFFFFFFF}).fetchone()
        except psycopg.Error as error:
            self._end(term, f"lock session failed: {one_line(error)}")
            return
        if not (row and row[0]):
            self._end(term, "the advisory lock is no longer held by its session")
            return
        with term.changed:
            if not term.ended.is_set():
                term.valid_until = max(term.valid_until, started + self.seconds)

    @staticmethod
    def _end(term: _Term, reason: str) -> None:
        with term.changed:
            if not term.ended.is_set():
                term.reason = reason
                term.ended.set()
            term.changed.notify_all()
        term.wake.set()


def check_lease(settings: Settings) -> None:
    if settings.scheduler_leader_lease_seconds <= settings.scheduler_interval_seconds:
        raise SettingsError(
            "invalid configuration:\n  SCHEDULER_LEADER_LEASE_SECONDS: must be greater than "
            f"SCHEDULER_INTERVAL_SECONDS ({settings.scheduler_interval_seconds:g})"
        )
