"""`fulfil scheduler`: one live instance drives everything time-based from Postgres.

Leadership is a Postgres advisory lock held on a dedicated connection (LeaderLease):
a second instance waits as a standby and takes over when the first dies, freezes or
loses its network, within about SCHEDULER_LEADER_LEASE_SECONDS (default 20):

- the lock's connection is not from the pool and is opened with a connect timeout,
  TCP keepalives and tcp_user_timeout on both ends, a statement timeout and
  `idle_session_timeout` = the lease.  A leader that stops talking (SIGSTOP, a VM
  pause, a half-open connection) leaves an idle session that Postgres ends after the
  lease, which releases the lock for a standby (PostgreSQL 14 or later);
- while leading, a heartbeat thread proves the lock is held (pg_locks) every quarter
  lease, also during long ticks, which keeps the session from going idle that long;
- before every job the leader proves again that it holds the lock; it relies on
  nothing older than the lease (the clock keeps running while the process is
  stopped).  A leader that cannot prove it, e.g. one woken up after a freeze or
  whose session was terminated, logs "lost leadership", closes the lock session
  and stands by again, without starting another job.  A job already running when
  the lock is lost finishes; jobs are idempotent batches (FOR UPDATE SKIP LOCKED),
  so two of them overlapping only costs duplicate work, never a lost purchase.
  `fulfil scheduler` also has Postgres end any job transaction left idle longer
  than the lease (limit_idle_transactions): a leader frozen in the middle of a
  batch does not keep its rows locked away from the new leader.

Each tick runs bounded, index-backed jobs:

- redrive: every live purchase whose next action is due gets its step sent again —
  a lost message, a killed worker or a broker restart only delays a purchase
  (invariant 2).  Due transfer checks are the same thing: the next check time of an
  AWAITING_TRANSFER purchase is its `next_action_at`.
- deadlines: near-deadline warnings (fulfilment/deadlines.py);
- outbox: the event relay (fulfilment/rabbitmq/outbox.py);
- gauges: the numbers operators watch (fulfilment/metrics.py).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import Engine, event, make_url, text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from fulfilment import metrics
from fulfilment.db import session_scope
from fulfilment.outages import BROKER, BROKER_MANAGEMENT, DATABASE
from fulfilment.settings import Settings, SettingsError
from fulfilment.state_machine import NEXT_STEP
from fulfilment.step_names import StepName

if TYPE_CHECKING:
    from fulfilment.rabbitmq.cluster import ClusterView

log = logging.getLogger(__name__)

# An arbitrary, fixed 64-bit key: "fulfil scheduler".
SCHEDULER_LOCK_KEY = 0x66756C66696C5348

Send = Callable[[StepName, uuid.UUID], None]

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
    for index, (purchase_id, state) in enumerate(rows):
        step = NEXT_STEP.get(state)  # type: ignore[call-overload]
        if step is None:  # cannot happen while transition() keeps next_action_at for live states only
            log.error("purchase %s is %s but has a next action; not re-driven", purchase_id, state)
            continue
        try:
            send(step, purchase_id)
        except Exception as error:
            if not _broker_outage(error):
                log.warning("could not send %s for purchase %s", step, purchase_id, exc_info=True)
                continue
            # The broker is out of reach: the rest of the batch would fail the same way.  One line
            # for the outage (fulfilment/outages.py), none per purchase; they are re-driven once it is back.
            BROKER.failed(f"re-drive of {len(rows) - sent} due purchase(s) waits: {_one_line(error)}",
                          waiting=[str(row[0]) for row in rows[index:]])
            break
        sent += 1
    return sent


def _broker_outage(error: BaseException) -> bool:
    import pika.exceptions
    from dramatiq.errors import ConnectionError as BrokerConnectionError

    return isinstance(error, (BrokerConnectionError, pika.exceptions.AMQPError, OSError))


@dataclass
class Job:
    name: str
    run: Callable[[], int]  # returns how many things it did
    every_seconds: float = 0.0  # 0: every tick; otherwise at most this often
    last_run: float = float("-inf")

    def due(self, now: float) -> bool:
        return now - self.last_run >= self.every_seconds


def _clock() -> float:
    """Seconds on a clock that keeps running while the process is stopped or the host suspended."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _one_line(error: BaseException) -> str:
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
            self._end(term, f"lock session failed: {_one_line(error)}")
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
                    DATABASE.failed(f"scheduler: cannot reach the database ({_one_line(error)}); standing by")
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


LIVE_COUNTS_SQL = text(
    """
    SELECT state, count(*), min(next_action_at) FILTER (WHERE claimed_until IS NULL OR claimed_until < now())
      FROM purchases
     WHERE state = ANY(:states)
     GROUP BY state
    """
)

# Backed by the partial index ix_outbox_events_unpublished: reads the backlog only.
OUTBOX_BACKLOG_SQL = text("SELECT count(*), min(created_at) FROM outbox_events WHERE published_at IS NULL")


@dataclass(frozen=True)
class LiveCounts:
    """What the gauges and the console's dashboard show from Postgres (read_live_counts)."""

    counts: dict[str, int]  # every live or held state, zeros included
    lag_seconds: float  # how long the most overdue live purchase has waited for its next action
    outbox_backlog: int
    outbox_oldest_age_seconds: float
    now: Any  # the database's clock (datetime)


def read_live_counts(session: Any) -> LiveCounts:
    """Purchases by live or held state, scheduler lag, outbox backlog and age: non-terminal purchases
    and unpublished events only (index-backed, cheap at any history size)."""
    from fulfilment.state_machine import HELD_FOR_OPERATOR

    watched = [s.value for s in (*NEXT_STEP, *HELD_FOR_OPERATOR)]
    rows = session.execute(LIVE_COUNTS_SQL, {"states": watched}).all()
    backlog, oldest_event = session.execute(OUTBOX_BACKLOG_SQL).one()
    now = session.execute(text("SELECT now()")).scalar_one()
    counts = {state: 0 for state in watched}
    oldest = None
    for state, count, due in rows:
        counts[state] = count
        if state in NEXT_STEP and due is not None and (oldest is None or due < oldest):
            oldest = due
    return LiveCounts(
        counts=counts,
        lag_seconds=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        outbox_backlog=int(backlog),
        outbox_oldest_age_seconds=max(0.0, (now - oldest_event).total_seconds()) if oldest_event else 0.0,
        now=now,
    )


def update_gauges(settings: Settings, queue_depths: Callable[[], dict[str, int]] | None = None,
                  unrouted_limit: Callable[[], int | None] = lambda: None,
                  cluster: Callable[[], ClusterView] | None = None) -> int:
    """Refresh the operator gauges (fulfilment/metrics.py).

    From Postgres (read_live_counts): purchases by live or held state, stalled, scheduler lag,
    outbox backlog and age.  From RabbitMQ, when `queue_depths` is given (fulfilment.rabbitmq.queues.queue_depths,
    whose default queues are GAUGED_QUEUES): dead letters, main-queue depth and unrouted events, with the
    unrouted queue's bound as the relay declared it (`unrouted_limit`: EventPublisher.unrouted_limit).
    RabbitMQ out of reach drops those gauges (absent rather than stale) and logs one line.
    From RabbitMQ's management API, when `cluster` is given (BROKER_MANAGEMENT_URL): nodes running,
    the node leading each queue of the pipeline and its replicas online (dropped when unreadable).
    """
    import pika.exceptions

    from fulfilment.rabbitmq.queues import DEAD_LETTER_QUEUES, QUEUES, UNROUTED
    from fulfilment.state_machine import State

    with session_scope() as session:
        live = read_live_counts(session)
    metrics.PURCHASES_BY_STATE.replace({(state,): count for state, count in live.counts.items()})
    metrics.STALLED.set(live.counts[State.STALLED.value])  # needs_attention: fulfil_purchases{state="needs_attention"}
    metrics.SCHEDULER_LAG.set(live.lag_seconds)
    metrics.OUTBOX_BACKLOG.set(live.outbox_backlog)
    metrics.OUTBOX_OLDEST_AGE.set(live.outbox_oldest_age_seconds)
    _replication_gauges(settings)
    if cluster is not None:
        _cluster_gauges(cluster)
    if queue_depths is None:
        return 0
    try:
        depths = queue_depths()
    except (pika.exceptions.AMQPError, OSError) as error:
        for gauge in metrics.BROKER_GAUGES:
            gauge.clear()
        BROKER.failed(f"scheduler gauges: cannot read queue depths ({_one_line(error)}); "
                      "dead-letter, queue and unrouted gauges dropped until it answers")
        return 0
    BROKER.recovered()
    metrics.DEAD_LETTERS.replace({(q,): depths[q] for q in DEAD_LETTER_QUEUES if q in depths})
    metrics.QUEUE_MESSAGES.replace({(q,): depths[q] for q in QUEUES if q in depths})
    if UNROUTED in depths:
        metrics.UNROUTED_EVENTS.set(depths[UNROUTED])
    else:
        metrics.UNROUTED_EVENTS.clear()
    limit = unrouted_limit()
    if limit is None:  # the relay has not declared the queue yet
        metrics.UNROUTED_EVENTS_LIMIT.clear()
    else:
        metrics.UNROUTED_EVENTS_LIMIT.set(limit)
    return 0


def _cluster_gauges(cluster: Callable[[], ClusterView]) -> None:
    from fulfilment.rabbitmq.cluster import ClusterUnreadable
    from fulfilment.rabbitmq.queues import GAUGED_QUEUES

    try:
        view = cluster()
    except ClusterUnreadable as error:
        for gauge in metrics.CLUSTER_GAUGES:
            gauge.clear()
        BROKER_MANAGEMENT.failed(f"scheduler gauges: {error}; node and queue-leader gauges dropped until it answers")
        return
    BROKER_MANAGEMENT.recovered()
    metrics.BROKER_NODE_RUNNING.replace({(node,): 1 if up else 0 for node, up in view.nodes.items()})
    queues = [view.queues[name] for name in GAUGED_QUEUES if name in view.queues]
    metrics.QUEUE_LEADER.replace({(q.name, q.leader): 1 for q in queues if q.leader})
    metrics.QUEUE_MEMBERS_ONLINE.replace({(q.name,): len(q.online) for q in queues})


def _replication_gauges(settings: Settings) -> None:
    """Role, synchronous standbys and lag of the database the purchases are written to."""
    from fulfilment.replication import replication_state

    with session_scope() as session:
        state = replication_state(session.connection())
    metrics.POSTGRES_PRIMARY.set(0 if state.in_recovery else 1)
    metrics.SYNCHRONOUS_STANDBYS.set(len(state.synchronous_standbys) if state.durable else 0)
    metrics.SYNC_STANDBY_REQUIRED.set(1 if settings.sync_standby_policy == "require" else 0)
    lag = state.max_replay_lag_seconds
    if lag is None:
        metrics.REPLICATION_LAG.clear()
    else:
        metrics.REPLICATION_LAG.set(lag)


# The scheduler leader's lock session, in this database (advisory locks are per database).
LEADER_SQL = text(
    """
    SELECT l.pid, host(a.client_addr), a.application_name, a.backend_start, a.state_change, now()
      FROM pg_locks AS l
      LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND l.classid::bigint = :high AND l.objid::bigint = :low
    """
)


@dataclass(frozen=True)
class Leader:
    """The session holding the scheduler's lock, as Postgres sees it."""

    backend_pid: int
    client_addr: str | None  # None: a local (unix socket) connection
    application_name: str | None
    session_started_at: Any  # datetime
    last_heartbeat_seconds: float | None  # since the lock session's last query (a heartbeat every lease/4)


def scheduler_leader(session: Any, key: int = SCHEDULER_LOCK_KEY) -> Leader | None:
    """Who leads the scheduler now (None: no scheduler holds the lock)."""
    row = session.execute(LEADER_SQL, {"high": key >> 32, "low": key & 0xFFFFFFFF}).first()
    if row is None:
        return None
    pid, client_addr, application_name, started, last_query, now = row
    since = max(0.0, (now - last_query).total_seconds()) if last_query is not None else None
    return Leader(int(pid), client_addr, application_name, started, since)
