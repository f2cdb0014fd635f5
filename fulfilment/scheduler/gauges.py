"""The gauges operators watch (fulfilment/metrics.py), and who leads (the console, `fulfil status`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from fulfilment import metrics
from fulfilment.db import session_scope
from fulfilment.outages import BROKER, BROKER_MANAGEMENT
from fulfilment.scheduler.leadership import SCHEDULER_LOCK_KEY, one_line
from fulfilment.settings import Settings
from fulfilment.state_machine import NEXT_STEP

if TYPE_CHECKING:
    from fulfilment.rabbitmq.cluster import ClusterView

log = logging.getLogger(__name__)


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
        BROKER.failed(f"scheduler gauges: cannot read queue depths ({one_line(error)}); "
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
