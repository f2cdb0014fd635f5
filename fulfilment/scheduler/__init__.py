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

from fulfilment.scheduler.gauges import (
    LEADER_SQL,
    LIVE_COUNTS_SQL,
    OUTBOX_BACKLOG_SQL,
    Leader,
    LiveCounts,
    read_live_counts,
    scheduler_leader,
    update_gauges,
)
from fulfilment.scheduler.leadership import (
    LOCK_HELD_SQL,
    SCHEDULER_LOCK_KEY,
    LeaderLease,
    LostLeadership,
    check_lease,
    limit_idle_transactions,
    lock_connection_params,
)
from fulfilment.scheduler.loop import (
    Job,
    Scheduler,
)
from fulfilment.scheduler.redrive import (
    REDRIVE_SQL,
    Send,
    redrive_due,
)

__all__ = [
    "Job",
    "LEADER_SQL",
    "LIVE_COUNTS_SQL",
    "LOCK_HELD_SQL",
    "Leader",
    "LeaderLease",
    "LiveCounts",
    "LostLeadership",
    "OUTBOX_BACKLOG_SQL",
    "REDRIVE_SQL",
    "SCHEDULER_LOCK_KEY",
    "Scheduler",
    "Send",
    "check_lease",
    "limit_idle_transactions",
    "lock_connection_params",
    "read_live_counts",
    "redrive_due",
    "scheduler_leader",
    "update_gauges",
]
