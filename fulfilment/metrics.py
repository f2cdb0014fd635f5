"""The product's own Prometheus metrics.

Worker processes: dramatiq's Prometheus middleware serves its metrics and ours
(partner calls, re-quotes, transitions) on `dramatiq_prom_host:dramatiq_prom_port`
(default 127.0.0.1:9191), aggregated over worker processes (prometheus multiprocess
mode, set up in workers/__init__.py).  The scheduler serves the gauges below on
METRICS_PORT (default 9192).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PARTNER_CALL_SECONDS = Histogram(
    "fulfil_partner_call_seconds", "Latency of partner API calls", ["partner", "operation", "outcome"]
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

# Scheduler gauges (one live scheduler computes them).
PURCHASES_BY_STATE = Gauge("fulfil_purchases", "Purchases by state", ["state"], multiprocess_mode="liveall")
STALLED = Gauge("fulfil_purchases_stalled", "Purchases stalled or needing attention", multiprocess_mode="liveall")
DEAD_LETTERS = Gauge("fulfil_dead_letters", "Messages in dead-letter queues", ["queue"], multiprocess_mode="liveall")
SCHEDULER_LAG = Gauge(
    "fulfil_scheduler_lag_seconds", "Age of the most overdue next action of a live purchase",
    multiprocess_mode="liveall",
)
SCHEDULER_LEADER = Gauge("fulfil_scheduler_leader", "1 while this scheduler holds the lock", multiprocess_mode="liveall")
SCHEDULER_JOB_SECONDS = Histogram("fulfil_scheduler_job_seconds", "Duration of scheduler jobs", ["job"])


def observe_partner_call(operation: str, outcome: str, seconds: float) -> None:
    PARTNER_CALL_SECONDS.labels("tbb", operation, "ok" if outcome == "ok" else "error").observe(seconds)
    if outcome != "ok":
        PARTNER_CALL_ERRORS.labels("tbb", operation, outcome).inc()
