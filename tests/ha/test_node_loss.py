"""Lose any one server, lose nothing (design invariant 11), on the real HA stack.

Purchases of both partners (every TM_EVERY-th one through the Ticketmaster sandbox) are submitted
all along, one every SUBMIT_EVERY seconds, while the harness: kills the RabbitMQ node leading
`purchases.intake` (kill -9), brings it back, kills the Postgres primary (Patroni and postgres,
kill -9: Patroni promotes the synchronous standby), brings the old primary back (it rejoins as a
standby), SIGKILLs every worker process and starts them again.  Pass: every purchase submitted
reaches a final state, none is ordered twice at its partner, no Ticketmaster commit on an expired
cart, and every event recorded for them is received by a consumer's quorum queue.  The pause after
each fault (the longest time without a state change anywhere) is printed and must stay under
PAUSE_LIMIT seconds.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import select

from fulfilment.db import session_scope
from models import OutboxEvent, PurchaseTransition
from tests.ha.conftest import ha
from tests.support import factories
from tests.support.events import EventListener
from tests.support.pipeline import Pipeline, in_states, partner_orders, restart_workers, start_pipeline, wait_until
from tests.support.sandbox import Sandbox
from tests.support.tm_sandbox import TMSandboxProcess

FINAL = ("transfer_complete", "transfer_expired", "cancelled", "failed", "tickets_issued")
SUBMIT_EVERY = 1.0
TM_EVERY = 5
PAUSE_LIMIT = 60.0  # the goal is 30 s on this machine; the test fails beyond twice that
SETTLE = 20.0  # seconds of normal work between faults


class Submitter(threading.Thread):
    """Submits a purchase every SUBMIT_EVERY seconds; a refused submission (exit 3 in the CLI) is
    retried with the same request_id, as the README tells requesting services to do."""

    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__(daemon=True)
        self.pipeline = pipeline
        self.ids: list[uuid.UUID] = []
        self.tm_ids: list[uuid.UUID] = []
        self.refusals = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            tm = len(self.ids) % TM_EVERY == TM_EVERY - 1
            body = factories.tm_request() if tm else factories.request()
            while not self.stop.is_set():
                try:
                    purchase_id = self.pipeline.submit(body)
                    self.ids.append(purchase_id)
                    if tm:
                        self.tm_ids.append(purchase_id)
                    break
                except Exception:  # noqa: BLE001  the broker refused: retry the same request_id
                    self.refusals += 1
                    time.sleep(0.5)
            self.stop.wait(SUBMIT_EVERY)


def transition_times(ids: list[uuid.UUID]) -> list[dt.datetime]:
    with session_scope() as session:
        return sorted(session.scalars(select(PurchaseTransition.created_at)
                                      .where(PurchaseTransition.purchase_id.in_(ids))))


def event_ids(ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Every event recorded for these purchases, once the relay has published them all."""
    deadline = time.monotonic() + 60
    while True:
        with session_scope() as session:
            rows = session.execute(select(OutboxEvent.id, OutboxEvent.published_at)
                                   .where(OutboxEvent.purchase_id.in_(ids))).all()
        if all(published is not None for _, published in rows) or time.monotonic() > deadline:
            assert all(published is not None for _, published in rows), "events left unpublished"
            return {event_id for event_id, _ in rows}
        time.sleep(1)


def events_missing(listener: EventListener, ids: list[uuid.UUID]) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """(every event recorded for these purchases, those the listener's quorum queue never received)."""
    recorded = event_ids(ids)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = {uuid.UUID(e["message_id"]) for e in listener.drain(timeout=2) if e["message_id"]}
        if recorded <= got:
            break
    return recorded, recorded - {uuid.UUID(e["message_id"]) for e in listener.received if e["message_id"]}


def pauses(times: list[dt.datetime], faults: dict[str, dt.datetime], tail: float = 90.0) -> dict[str, float]:
    """For each fault, the longest time without a state change anywhere, from the last change
    before the fault, among the gaps that end before the next fault (or `tail` s after the last)."""
    moments = sorted(faults.items(), key=lambda item: item[1])
    ends = [at for _, at in moments[1:]] + [moments[-1][1] + dt.timedelta(seconds=tail)]
    result = {}
    for (name, fault), end in zip(moments, ends, strict=True):
        longest = 0.0
        for before, after in zip(times, times[1:], strict=False):
            if fault <= after <= end:
                longest = max(longest, (after - before).total_seconds())
        result[name] = longest
    return result


def now() -> dt.datetime:
    """The clock of the history's created_at (Postgres on this machine)."""
    return dt.datetime.now(dt.UTC)


def test_killing_a_rabbitmq_node_and_the_postgres_primary_loses_nothing(
    ha_env: dict[str, str], sandbox: Sandbox, tm_sandbox: TMSandboxProcess, log_dir: Path,
) -> None:
    from fulfilment.partners.ticketmaster.flow import source_account_id

    listener = EventListener(ha_env["BROKER_URL"], "purchase.#", durable=True, quorum=True)
    pipeline = start_pipeline(ha_env, log_dir, processes=2, threads=4, name="ha")
    submitter = Submitter(pipeline)
    faults: dict[str, dt.datetime] = {}
    try:
        submitter.start()
        time.sleep(SETTLE)

        leader = ha("leader-rabbit", "purchases.intake").strip()
        faults[f"kill RabbitMQ node {leader} (intake leader)"] = now()
        ha("kill-rabbit", leader)
        time.sleep(SETTLE)
        faults[f"RabbitMQ node {leader} back"] = now()
        ha("start-rabbit", leader)
        time.sleep(SETTLE)

        primary = ha("primary").strip()
        faults[f"kill -9 Postgres primary pg{primary}"] = now()
        ha("failover")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if ha("primary").strip() not in ("", primary):
                    break
            except RuntimeError:
                pass
            time.sleep(1)
        time.sleep(SETTLE)
        faults[f"pg{primary} back as standby"] = now()
        ha("start-pg", primary)
        time.sleep(SETTLE)

        faults["SIGKILL every worker, start them again"] = now()
        os.killpg(pipeline.workers.pid, signal.SIGKILL)
        pipeline.workers.process.wait(10)  # type: ignore[union-attr]
        restart_workers(pipeline, log_dir)
        time.sleep(SETTLE)
    finally:
        submitter.stop.set()
        submitter.join(timeout=30)

    try:
        ids = list(submitter.ids)
        assert len(ids) >= 60, f"only {len(ids)} submitted"
        done = wait_until(ids, in_states(*FINAL), timeout=240, pipeline=pipeline)
        tbb_ids = [i for i in ids if i not in set(submitter.tm_ids)]
        twice = {str(i): len(orders) for i in tbb_ids if len(orders := partner_orders(sandbox, i)) > 1}
        assert twice == {}, f"TBB purchases ordered more than once: {twice}"
        assert all(len(partner_orders(sandbox, i)) == 1 for i in tbb_ids if done[i].state != "failed")
        counts = tm_sandbox.admin.counts()
        tm_orders = {i: counts["orders_per_source_account"].get(source_account_id(i), 0) for i in submitter.tm_ids}
        assert {str(i): n for i, n in tm_orders.items() if n > 1} == {}, "Ticketmaster purchases ordered twice"
        assert all(tm_orders[i] == 1 for i in submitter.tm_ids if done[i].state == "tickets_issued")
        assert counts["commits_on_expired_carts"] == 0

        recorded, missing = events_missing(listener, ids)
        assert not missing, f"{len(missing)} of {len(recorded)} events never received"

        times = transition_times(ids)
        measured = pauses(times, faults)
        report = "\n".join(f"  {name:<40} pause {seconds:5.1f} s" for name, seconds in measured.items())
        print(f"\nHA stack: {len(ids)} purchases ({len(submitter.tm_ids)} Ticketmaster), 0 lost, 0 ordered twice, "
              f"{len(recorded)} events all received, "
              f"{submitter.refusals} submission(s) retried\n{report}")
        (log_dir / "ha-pauses.txt").write_text(report + "\n")
        assert max(measured.values()) <= PAUSE_LIMIT, report
    finally:
        listener.close()
        pipeline.stop()
        subprocess.run(["bash", str(Path(__file__).parents[2] / "scripts" / "ha.sh"), "status"], check=False)
