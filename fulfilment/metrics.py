"""The product's own Prometheus metrics.

Worker processes: dramatiq's Prometheus middleware serves its metrics and ours
(partner calls, re-quotes, transitions, rejected requests) on
`dramatiq_prom_host:dramatiq_prom_port` (dramatiq's default 0.0.0.0:9191), aggregated over worker
processes (prometheus multiprocess mode, set up in workers/__init__.py).

The scheduler serves its gauges (SCHEDULER_GAUGES below) on METRICS_HOST:METRICS_PORT
(default 127.0.0.1:9192).  They are plain values in the scheduler's memory behind a
custom collector, never prometheus_client Gauges: in a worker process, where
multiprocess mode is on, a Gauge writes its value into the files dramatiq's exposition
server aggregates, so every worker process used to export `fulfil_scheduler_leader{pid=...} 0`
and friends.  A collector writes nothing; worker processes never serve the default
registry it is registered in.  Only the leader exports the gauges computed from Postgres
and RabbitMQ: a scheduler that steps down drops them, so a standby never reports stale
numbers beside the new leader's.

Alert rules and a Grafana dashboard built on these: docs/monitoring/.
"""

from __future__ import annotations

import glob
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fulfilment.outages import partner_outage

# One partner call is one HTTP exchange, bounded by the connect (TBB_CONNECT_TIMEOUT, default 5 s)
# plus read (TBB_READ_TIMEOUT, default 20 s) timeouts: the buckets go well past both.
PARTNER_CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 45.0, 60.0)

PARTNER_CALL_SECONDS = Histogram(
    "fulfil_partner_call_seconds", "Latency of partner API calls (one HTTP exchange each)",
    ["partner", "operation", "outcome"], buckets=PARTNER_CALL_BUCKETS,
)
PARTNER_CALL_ERRORS = Counter(
    "fulfil_partner_call_errors_total", "Partner API calls that failed, by error code", ["partner", "operation", "code"]
)
REQUOTES = Counter("fulfil_requotes_total", "Purchases sent back for a new quote", ["reason"])
TRANSITIONS = Counter("fulfil_events_total", "History entries recorded, by event type", ["event"])
# Fencing (invariant 8): answers that came back after their purchase moved on, and orders among them.
LATE_ANSWERS = Counter("fulfil_late_answers_total", "Partner answers too late to move their purchase", ["step"])
ORPHAN_ORDERS = Counter("fulfil_orphan_orders_total", "Partner orders recorded for a purchase that had moved on")
# Intake during a database outage (invariant 9): requests wait in RabbitMQ, retried until Postgres is back.
INTAKE_DATABASE_WAITS = Counter(
    "fulfil_intake_database_waits_total", "Intake attempts put back because the database was unavailable"
)
INTAKE_WAITING_FOR_DATABASE = Gauge(
    "fulfil_intake_waiting_for_database", "1 while the latest intake attempt found the database unavailable",
    multiprocess_mode="livemostrecent",
)
# Requests refused at intake (recorded in rejected_requests), by reason code.
REJECTED_REQUESTS = Counter(
    "fulfil_rejected_requests_total", "Purchase requests rejected at intake, by reason code", ["code"]
)

SCHEDULER_JOB_SECONDS = Histogram("fulfil_scheduler_job_seconds", "Duration of scheduler jobs", ["job"])


class SchedulerGauge:
    """One gauge of the scheduler: values kept in this process's memory, exported by SchedulerGauges."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *, leader_only: bool = True):
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.leader_only = leader_only  # dropped when the scheduler stops leading
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def set(self, value: float, *labels: str) -> None:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labels}")
        with self._lock:
            self._values[tuple(str(label) for label in labels)] = float(value)

    def replace(self, values: dict[tuple[str, ...], float]) -> None:
        """Set every label set at once; label sets not given disappear."""
        for labels in values:
            if len(labels) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labels}")
        with self._lock:
            self._values = {tuple(str(label) for label in labels): float(v) for labels, v in values.items()}

    def get(self, *labels: str) -> float | None:
        with self._lock:
            return self._values.get(tuple(labels))

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def family(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            for labels, value in sorted(self._values.items()):
                family.add_metric(list(labels), value)
        return family


class SchedulerGauges(Collector):
    """The scheduler's gauges, as one collector in the default registry (which only the scheduler serves)."""

    def __init__(self) -> None:
        self.gauges: list[SchedulerGauge] = []

    def add(self, gauge: SchedulerGauge) -> SchedulerGauge:
        self.gauges.append(gauge)
        return gauge

    def collect(self) -> Iterator[Metric]:
        for gauge in self.gauges:
            yield gauge.family()

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(g.name, g.documentation, labels=g.labelnames) for g in self.gauges]

    def set_leader(self, leading: bool) -> None:
        SCHEDULER_LEADER.set(1 if leading else 0)
        if not leading:
            for gauge in self.gauges:
                if gauge.leader_only:
                    gauge.clear()


SCHEDULER_GAUGES = SchedulerGauges()
SCHEDULER_LEADER = SCHEDULER_GAUGES.add(SchedulerGauge(
    "fulfil_scheduler_leader", "1 while this scheduler holds the leader lock, 0 on a standby", leader_only=False))
SCHEDULER_LEADER.set(0)
PURCHASES_BY_STATE = SCHEDULER_GAUGES.add(SchedulerGauge(
    "fulfil_purchases", "Purchases by state (live states and those held for an operator)", ["state"]))
STALLED = SCHEDULER_GAUGES.add(SchedulerGauge(
    "fulfil_purchases_stalled", "Purchases stalled (retries exhausted), waiting for an operator's retry"))
SCHEDULER_LAG = SCHEDULER_GAUGES.add(SchedulerGauge(
    "fulfil_scheduler_lag_seconds", "Age of the most overdue next action of a live purchase"))
OUTBOX_BACKLOG = SCHEDULER_GAUGES.add(SchedulerGauge(
    "fulfil_outbox_backlog", "Events recorded but not yet published to RabbitMQ"))
OUTBOX_OLDEST_AGE = SCHEDULER_GAUGES.add(SchedulerGauge(
    "fulfil_outbox_oldest_age_seconds", "Age of the oldest event not yet published (0 when none)"))
DEAD_LETTERS = SCHEDULER_GAUGES.add(SchedulerGauge(
    "fulfil_dead_letters", "Messages in dead-letter queues", ["queue"]))
QUEUE_MESSAGES = SCHEDULER_GAUGES.add(SchedulerGauge(
    "fulfil_queue_messages", "Messages ready in the main queues of the pipeline, not yet delivered", ["queue"]))
UNROUTED_EVENTS = SCHEDULER_GAUGES.add(SchedulerGauge(
    "fulfil_unrouted_events", "Events kept in queue fulfilment.events.unrouted (no consumer queue was bound)"))
UNROUTED_EVENTS_LIMIT = SCHEDULER_GAUGES.add(SchedulerGauge(
    "fulfil_unrouted_events_limit", "The max length fulfilment.events.unrouted was declared with "
    "(EVENTS_UNROUTED_MAX_LENGTH: beyond it the oldest events are dropped); 0: none, or the queue predates it"))
# Postgres replication, read from the primary (fulfilment/replication.py) by the leader's gauges job.
POSTGRES_PRIMARY = SCHEDULER_GAUGES.add(SchedulerGauge(
    "fulfil_postgres_primary", "1 when the database the scheduler writes to is a primary (not in recovery)"))
SYNCHRONOUS_STANDBYS = SCHEDULER_GAUGES.add(SchedulerGauge(
    "fulfil_postgres_synchronous_standbys",
    "Standbys streaming as sync/quorum with commits waiting for them (0: order intents on one server)"))
SYNC_STANDBY_REQUIRED = SCHEDULER_GAUGES.add(SchedulerGauge(
    "fulfil_postgres_sync_standby_required", "1 when SYNC_STANDBY_POLICY=require"))
REPLICATION_LAG = SCHEDULER_GAUGES.add(SchedulerGauge(
    "fulfil_postgres_replication_lag_seconds", "Largest replay lag of a standby, as the primary sees it"))
# The RabbitMQ cluster, from its management API (BROKER_MANAGEMENT_URL; fulfilment/rabbitmq/cluster.py).
BROKER_NODE_RUNNING = SCHEDULER_GAUGES.add(SchedulerGauge(
    "fulfil_broker_node_running", "1 for each RabbitMQ node of the cluster that runs, 0 for one that does not",
    ["node"]))
QUEUE_LEADER = SCHEDULER_GAUGES.add(SchedulerGauge(
    "fulfil_queue_leader", "1 on the node leading each quorum queue of the pipeline (classic: the node it lives on)",
    ["queue", "node"]))
QUEUE_MEMBERS_ONLINE = SCHEDULER_GAUGES.add(SchedulerGauge(
    "fulfil_queue_members_online", "Replicas of each quorum queue of the pipeline that run", ["queue"]))
REGISTRY.register(SCHEDULER_GAUGES)

# Gauges computed from RabbitMQ: dropped (absent, never stale) when it cannot be read.
BROKER_GAUGES = (DEAD_LETTERS, QUEUE_MESSAGES, UNROUTED_EVENTS, UNROUTED_EVENTS_LIMIT)
CLUSTER_GAUGES = (BROKER_NODE_RUNNING, QUEUE_LEADER, QUEUE_MEMBERS_ONLINE)


def set_scheduler_leader(leading: bool) -> None:
    SCHEDULER_GAUGES.set_leader(leading)


def partner_observer(partner: str) -> Callable[[str, str, float], None]:
    """A partner client's call observer: (operation, outcome "ok" or an error code, seconds)."""

    outage = partner_outage(partner)

    def observe(operation: str, outcome: str, seconds: float) -> None:
        PARTNER_CALL_SECONDS.labels(partner, operation, "ok" if outcome == "ok" else "error").observe(seconds)
        if outcome == "ok":
            outage.recovered()  # the "back" line of a partner outage (fulfilment/outages.py)
        else:
            PARTNER_CALL_ERRORS.labels(partner, operation, outcome).inc()

    return observe


observe_partner_call = partner_observer("tbb")


_LIVE_GAUGE_FILE = re.compile(r"gauge_(live\w+)_(\d+)\.db$")


def prune_dead_process_files(path: str) -> list[str]:
    """Remove the live-gauge files of processes that no longer exist; return their names.

    A worker process that exits normally removes its own (dramatiq's middleware calls
    mark_process_dead), but one killed with SIGKILL or by the OOM killer leaves them behind, and
    dramatiq does not clear the directory: its `dramatiq_messages_inprogress` (livesum), for one,
    would be exported for ever.  Counter and histogram files stay (their totals must not go back).
    The directory must belong to workers of this host's (container's) process namespace.
    """
    removed = []
    for file in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        match = _LIVE_GAUGE_FILE.search(os.path.basename(file))
        if match is None or _alive(int(match.group(2))):
            continue
        try:
            os.remove(file)
        except FileNotFoundError:
            continue  # another process pruned it first
        removed.append(os.path.basename(file))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True
