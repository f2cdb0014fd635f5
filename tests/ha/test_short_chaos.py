"""The short HA chaos of `make test` (tests/ha/test_node_loss.py is the long one, in `make chaos-ha`).

On the HA stack (brought up for this module when it is not running, and stopped after it):
PURCHASES purchases of both partners (every TM_EVERY-th through the Ticketmaster sandbox) submitted
one a second while the harness kills the RabbitMQ node leading `purchases.intake` (kill -9), starts
it again, then kills the Postgres primary (Patroni promotes the synchronous standby) and brings the
old primary back as a standby.  Pass: every purchase reaches a final state (0 lost), none ordered
twice at its partner, no Ticketmaster commit on an expired cart, every event recorded for them
received by a consumer's quorum queue.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.ha.conftest import ha
from tests.ha.test_node_loss import FINAL, events_missing
from tests.support import factories
from tests.support.events import EventListener
from tests.support.pipeline import in_states, partner_orders, start_pipeline, wait_until
from tests.support.sandbox import Sandbox
from tests.support.tm_sandbox import TMSandboxProcess

pytestmark = pytest.mark.short_ha

PURCHASES = 20
TM_EVERY = 4


def wait_for_new_primary(old: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            primary = ha("primary").strip()
            if primary and primary != old:
                return primary
        except RuntimeError:
            pass
        time.sleep(1)
    raise AssertionError(f"no new Postgres primary after {timeout}s")


def test_twenty_purchases_survive_the_intake_leader_node_and_the_postgres_primary(
    ha_env: dict[str, str], sandbox: Sandbox, tm_sandbox: TMSandboxProcess, log_dir: Path,
) -> None:
    from fulfilment.partners.ticketmaster.flow import source_account_id

    listener = EventListener(ha_env["BROKER_URL"], "purchase.#", durable=True, quorum=True)
    pipeline = start_pipeline(ha_env, log_dir, processes=2, threads=4, name="ha-short")
    ids: list[uuid.UUID] = []
    tm_ids: list[uuid.UUID] = []
    refusals = [0]

    def submit_all() -> None:
        for n in range(PURCHASES):
            body = factories.tm_request() if n % TM_EVERY == TM_EVERY - 1 else factories.request()
            while True:
                try:  # a refused submission is retried with the same request_id (README)
                    purchase_id = pipeline.submit(body)
                    break
                except Exception:  # noqa: BLE001
                    refusals[0] += 1
                    time.sleep(0.5)
            ids.append(purchase_id)
            if body.get("partner") == "ticketmaster":
                tm_ids.append(purchase_id)
            time.sleep(1.0)

    submitter = threading.Thread(target=submit_all, daemon=True)
    try:
        submitter.start()
        time.sleep(4)
        leader = ha("leader-rabbit", "purchases.intake").strip()
        ha("kill-rabbit", leader)
        time.sleep(4)
        ha("start-rabbit", leader, timeout=180)
        primary = ha("primary").strip()
        ha("failover")
        wait_for_new_primary(primary)
        ha("start-pg", primary)
        submitter.join(timeout=120)
        assert not submitter.is_alive(), "submissions did not finish"

        assert len(ids) == PURCHASES
        done = wait_until(ids, in_states(*FINAL), timeout=180, pipeline=pipeline)
        tbb_ids = [i for i in ids if i not in set(tm_ids)]
        twice = {str(i): len(orders) for i in tbb_ids if len(orders := partner_orders(sandbox, i)) > 1}
        assert twice == {}, f"TBB purchases ordered more than once: {twice}"
        assert all(len(partner_orders(sandbox, i)) == 1 for i in tbb_ids if done[i].state != "failed")
        counts = tm_sandbox.admin.counts()
        tm_orders = {i: counts["orders_per_source_account"].get(source_account_id(i), 0) for i in tm_ids}
        assert {str(i): n for i, n in tm_orders.items() if n > 1} == {}, "Ticketmaster purchases ordered twice"
        assert all(tm_orders[i] == 1 for i in tm_ids if done[i].state == "tickets_issued")
        assert counts["commits_on_expired_carts"] == 0

        recorded, missing = events_missing(listener, ids)
        assert not missing, f"{len(missing)} of {len(recorded)} events never received"
        print(f"\nshort HA chaos: {len(ids)} purchases ({len(tm_ids)} Ticketmaster), RabbitMQ node {leader} "
              f"killed, pg{primary} failed over; 0 lost, 0 ordered twice, {len(recorded)} events all received, "
              f"{refusals[0]} submission(s) retried")
    finally:
        submitter.join(timeout=5)
        listener.close()
        pipeline.stop()
