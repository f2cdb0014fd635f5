"""A running pipeline for end-to-end tests: real worker processes and the scheduler."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from sqlalchemy import select

from fulfilment.db import session_scope
from fulfilment.publish import Publisher
from models import Purchase
from tests.support.processes import ManagedProcess, start_scheduler, start_workers, wait_for_consumers


@dataclass
class Pipeline:
    env: dict[str, str]
    workers: ManagedProcess
    scheduler: ManagedProcess
    publisher: Publisher

    def submit(self, request: dict[str, Any]) -> uuid.UUID:
        return self.publisher.submit(request)

    def stop(self) -> None:
        self.publisher.close()
        self.scheduler.stop()
        self.workers.stop()


def start_pipeline(env: dict[str, str], log_dir: Path, *, processes: int = 2, threads: int = 4,
                   name: str = "pipeline") -> Pipeline:
    workers = start_workers(env, log_dir, processes=processes, threads=threads, name=f"{name}-workers")
    scheduler = start_scheduler(env, log_dir, name=f"{name}-scheduler")
    try:
        wait_for_consumers(env["BROKER_URL"], workers, expected=processes)
    except Exception:
        scheduler.stop()
        workers.stop()
        raise
    return Pipeline(env, workers, scheduler, Publisher(env["BROKER_URL"]))


def purchases(ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Purchase]:
    wanted = list(ids)
    with session_scope() as session:
        return {p.id: p for p in session.scalars(select(Purchase).where(Purchase.id.in_(wanted)))}


def wait_until(ids: Iterable[uuid.UUID], done: Callable[[Purchase], bool], *, timeout: float = 90,
               pipeline: Pipeline | None = None) -> dict[uuid.UUID, Purchase]:
    """Poll Postgres until every purchase satisfies `done`; fail with where each one stands.

    A read that cannot reach Postgres (a failover in progress: the old primary down, the new one
    not yet writable) is tried again until `timeout`, as the workers wait it out; the last such
    error is in the failure."""
    wanted = list(ids)
    deadline = time.monotonic() + timeout
    found: dict[uuid.UUID, Purchase] = {}
    unreachable = ""
    while time.monotonic() < deadline:
        try:
            found = purchases(wanted)
        except sqlalchemy.exc.OperationalError as error:
            unreachable = f"\nlast read failed: {str(error).splitlines()[0]}"
            time.sleep(1.0)
            continue
        unreachable = ""
        if len(found) == len(wanted) and all(done(p) for p in found.values()):
            return found
        time.sleep(0.25)
    stuck = {str(i): (found[i].state, found[i].last_error) if i in found else "missing"
             for i in wanted if i not in found or not done(found[i])}
    detail = unreachable
    if pipeline is not None:
        detail += f"\nworkers log:\n{pipeline.workers.log_tail()}\nscheduler log:\n{pipeline.scheduler.log_tail(15)}"
    raise AssertionError(f"{len(stuck)} purchase(s) not done after {timeout}s: {stuck}{detail}")


def in_states(*states: str) -> Callable[[Purchase], bool]:
    return lambda p: p.state in states


def partner_orders(sandbox: Sandbox, purchase_id: uuid.UUID) -> list[dict[str, Any]]:  # noqa: F821
    """Every order the sandbox holds for any quote this purchase ever received."""
    from models import PartnerQuote

    with session_scope() as session:
        quote_ids = list(session.scalars(select(PartnerQuote.quote_id).where(PartnerQuote.purchase_id == purchase_id)))
    return [order for quote_id in quote_ids for order in sandbox.orders(quote_id=quote_id)]


def restart_workers(pipeline: Pipeline, log_dir: Path, *, processes: int = 2, threads: int = 4) -> None:
    from tests.support.processes import start_workers, wait_for_consumers

    pipeline.workers = start_workers(pipeline.env, log_dir, processes=processes, threads=threads,
                                     name=f"{pipeline.workers.name}-again")
    wait_for_consumers(pipeline.env["BROKER_URL"], pipeline.workers, expected=processes)
