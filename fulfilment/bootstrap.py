"""All wiring in one place (cosmicpython's bootstrap): what the scheduler process runs, with what.

The CLI command (`fulfil scheduler`) only starts what this builds; tests and benchmarks build
the same jobs.  Nothing here decides business rules: each job is a function of its module.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from fulfilment.deadlines import flag_near_deadlines
from fulfilment.rabbitmq.cluster import read_cluster
from fulfilment.rabbitmq.outbox import EventPublisher, relay_outbox
from fulfilment.rabbitmq.publisher import confirmed_broker, send_refresh, send_step
from fulfilment.rabbitmq.queues import queue_depths
from fulfilment.scheduler import Job, redrive_due, update_gauges
from fulfilment.settings import Settings
from fulfilment.step_names import StepName
from fulfilment.steps.refresh import schedule_refreshes


@dataclass
class SchedulerWiring:
    jobs: list[Job]
    _close: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self._close):
            close()


def scheduler_jobs(settings: Settings) -> SchedulerWiring:
    """The scheduler's jobs, each a bounded batch per tick, and the connections they hold."""
    broker = confirmed_broker(settings.broker_url, settings)  # steps are sent without importing the workers
    publisher = EventPublisher(settings.broker_url, unrouted_max_length=settings.events_unrouted_max_length,
                               unrouted_ttl_seconds=settings.events_unrouted_ttl_seconds,
                               queue_type=settings.broker_queue_type)

    def send(step: StepName, purchase_id: uuid.UUID) -> None:
        send_step(broker, step, purchase_id)

    def relay() -> int:
        # Drain the backlog within a time budget, one confirmed batch at a time.
        total, deadline = 0, time.monotonic() + max(1.0, settings.scheduler_interval_seconds)
        while time.monotonic() < deadline:
            sent = relay_outbox(publisher, batch_size=settings.scheduler_batch_size, ticket_key=settings.ticket_key)
            total += sent
            if sent < settings.scheduler_batch_size:
                break
        return total

    management_url = settings.broker_management_url
    cluster = (lambda: read_cluster(management_url, settings.broker_url)) if management_url else None
    jobs = [
        Job("redrive", lambda: redrive_due(settings, send)),
        Job("deadlines", lambda: flag_near_deadlines(settings.deadline_warning_hours,
                                                     batch_size=settings.scheduler_batch_size)),
        Job("outbox", relay),
        # SafeTix tokens refreshed once at event start - 20 h (by a worker: the scheduler calls no partner).
        Job("ticket_refresh", lambda: schedule_refreshes(
            settings, lambda purchase_id: send_refresh(broker, purchase_id, on_demand=False))),
        # Counts every live purchase: cheap per row, but not per tick at scale.
        Job("gauges", lambda: update_gauges(settings, lambda: queue_depths(settings.broker_url),
                                            lambda: publisher.unrouted_limit, cluster),
            every_seconds=max(15.0, settings.scheduler_interval_seconds)),
    ]
    return SchedulerWiring(jobs, [publisher.close, broker.close])
