"""Which node leads each quorum queue, read from the real 3-node cluster's management API
(BROKER_MANAGEMENT_URL, fulfilment/rabbitmq/cluster.py): `fulfil health`'s `queue_leaders` line and
the scheduler's gauges agree with `rabbitmqctl list_queues name leader` (scripts/ha.sh leader-rabbit),
and follow a leader election when the leading node is killed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from fulfilment import metrics
from fulfilment.health import BrokerDown, check_queue_leaders
from fulfilment.rabbitmq.cluster import ClusterView, read_cluster
from fulfilment.rabbitmq.publisher import confirmed_broker
from fulfilment.rabbitmq.queues import INTAKE_QUEUE, QUEUES
from fulfilment.scheduler.gauges import _cluster_gauges
from fulfilment.settings import QueueSettings, Settings
from tests.ha.conftest import ha


def settings_of(ha_stack: dict[str, str]) -> Settings:
    return Settings(_env_file=None, database_url=ha_stack["DATABASE_URL"], broker_url=ha_stack["BROKER_URL"],  # type: ignore[call-arg]
                    broker_management_url=ha_stack["BROKER_MANAGEMENT_URL"], broker_queue_type="quorum",
                    tbb_base_url="http://127.0.0.1:1", tbb_client_id="x", tbb_client_secret="y")


def wait_for(what: str, predicate, timeout: float = 90.0) -> ClusterView:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    view = None
    while time.monotonic() < deadline:
        try:
            view = predicate()
        except Exception:  # noqa: BLE001  a node is starting or stopping: ask again
            view = None
        if view is not None:
            return view
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def test_health_and_gauges_name_the_leader_rabbitmqctl_names_and_follow_an_election(
        ha_stack: dict[str, str]) -> None:
    settings = settings_of(ha_stack)
    broker = confirmed_broker(settings.broker_url, QueueSettings(broker_queue_type="quorum"))
    try:
        for queue in QUEUES:
            broker.declare_queue(queue, ensure=True)
    finally:
        broker.close()

    leader = int(ha("leader-rabbit", INTAKE_QUEUE).strip())
    view = read_cluster(settings.broker_management_url or "", settings.broker_url)
    assert view.running == ("ha1@localhost", "ha2@localhost", "ha3@localhost")
    assert view.queues[INTAKE_QUEUE].type == "quorum"
    assert view.queues[INTAKE_QUEUE].leader == f"ha{leader}@localhost"
    assert len(view.queues[INTAKE_QUEUE].online) == 3
    line = check_queue_leaders(settings)
    assert f"{INTAKE_QUEUE} led by ha{leader}@localhost (3/3 members online)" in line

    # `fulfil health` as an operator runs it (the TBB check fails: no partner here; exit 3).
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "BROKER_", "TBB_", "TM_"))},
           **ha_stack, "TBB_BASE_URL": "http://127.0.0.1:1", "TBB_CLIENT_ID": "x", "TBB_CLIENT_SECRET": "y"}
    shown = subprocess.run([sys.executable, "-m", "fulfilment.cli", "health"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert f"queue_leaders ok  nodes running 3/3; queue leaders: {INTAKE_QUEUE} led by ha{leader}@localhost" \
        in shown.stdout, shown.stdout + shown.stderr

    _cluster_gauges(lambda: read_cluster(settings.broker_management_url or "", settings.broker_url))
    assert metrics.QUEUE_LEADER.get(INTAKE_QUEUE, f"ha{leader}@localhost") == 1
    assert metrics.BROKER_NODE_RUNNING.get(f"ha{leader}@localhost") == 1

    ha("kill-rabbit", str(leader))
    try:
        def elected() -> ClusterView | None:
            now = read_cluster(settings.broker_management_url or "", settings.broker_url)
            queue = now.queues.get(INTAKE_QUEUE)
            moved = queue is not None and queue.leader not in (None, f"ha{leader}@localhost")
            return now if moved and f"ha{leader}@localhost" not in now.running else None

        after = wait_for("a new leader of purchases.intake", elected)
        new_leader = after.queues[INTAKE_QUEUE].leader
        assert new_leader in after.running and len(after.queues[INTAKE_QUEUE].online) == 2
        try:
            check_queue_leaders(settings)
            raise AssertionError("health passed with a node down")
        except BrokerDown as down:
            assert f"nodes running 2/3 (down: ha{leader}@localhost)" in str(down)
            assert f"{INTAKE_QUEUE} led by {new_leader} (2/3 members online)" in str(down)
        _cluster_gauges(lambda: read_cluster(settings.broker_management_url or "", settings.broker_url))
        assert metrics.QUEUE_LEADER.get(INTAKE_QUEUE, str(new_leader)) == 1
        assert metrics.BROKER_NODE_RUNNING.get(f"ha{leader}@localhost") == 0
        assert metrics.QUEUE_MEMBERS_ONLINE.get(INTAKE_QUEUE) == 2
    finally:
        ha("start-rabbit", str(leader), timeout=180)
    wait_for("the node back in the cluster", lambda: (
        view if len((view := read_cluster(settings.broker_management_url or "", settings.broker_url)).running) == 3
        and len(view.queues[INTAKE_QUEUE].online) == 3 else None), timeout=120)
    assert "nodes running 3/3" in check_queue_leaders(settings)
