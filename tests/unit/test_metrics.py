"""Our Prometheus metrics: what a worker process exports, the scheduler's gauges, partner buckets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from fulfilment import metrics
from fulfilment.settings import Settings
from tests.support.servers import REPO

SCHEDULER_ONLY = {gauge.name for gauge in metrics.SCHEDULER_GAUGES.gauges}

# What a worker process does: multiprocess mode on, then our modules imported (the scheduler's
# code included: the worker imports fulfilment.scheduler nowhere, but it must not matter), and
# metrics recorded.  Even the scheduler's gauges set here must not reach the shared files.
WORKER_PROCESS = """
import os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from fulfilment import metrics, scheduler  # noqa: F401
metrics.REJECTED_REQUESTS.labels("INVALID_REQUEST").inc()
metrics.observe_partner_call("create_order", "ok", 22.0)
metrics.set_scheduler_leader(True)
metrics.STALLED.set(3)
"""


def exported_by_workers(directory: Path) -> dict[str, list[tuple[dict[str, str], float]]]:
    """What dramatiq's exposition server serves for this directory (it does exactly this)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_worker_processes_export_our_counters_but_none_of_the_scheduler_gauges(tmp_path: Path) -> None:
    for _ in range(2):  # two worker processes sharing the directory
        subprocess.run([sys.executable, "-c", WORKER_PROCESS, str(tmp_path)], cwd=REPO, check=True,
                       env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"})
    samples = exported_by_workers(tmp_path)

    assert samples["fulfil_rejected_requests_total"] == [({"code": "INVALID_REQUEST"}, 2.0)]
    assert samples["fulfil_orphan_orders_total"] == [({}, 0.0)]
    leaked = sorted(name for name in samples if any(name.startswith(g) for g in SCHEDULER_ONLY))
    assert leaked == [], f"worker processes export scheduler gauges: {leaked}"
    assert not [name for name in samples if "pid" in str(samples[name])], "per-process series"


def test_a_22_second_partner_call_lands_in_a_finite_bucket(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", WORKER_PROCESS, str(tmp_path)], cwd=REPO, check=True,
                   env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"})
    buckets = {labels["le"]: value for labels, value in exported_by_workers(tmp_path)["fulfil_partner_call_seconds_bucket"]}
    assert buckets["20.0"] == 0 and buckets["25.0"] == 1  # the default read timeout is 20 s


def test_partner_buckets_reach_past_the_default_connect_and_read_timeouts() -> None:
    fields = Settings.model_fields
    longest_exchange = fields["tbb_connect_timeout"].default + fields["tbb_read_timeout"].default
    finite = [b for b in metrics.PARTNER_CALL_BUCKETS if b != float("inf")]
    assert max(finite) >= 2 * longest_exchange
    assert {10.0, 20.0, 25.0} <= set(finite)  # the old top bucket, the read timeout, connect + read


def scheduler_exposition() -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        if family.name in SCHEDULER_ONLY:
            found[family.name] = [(s.labels, s.value) for s in family.samples]
    return found


def test_the_scheduler_exports_its_gauges_only_while_it_leads() -> None:
    try:
        metrics.set_scheduler_leader(True)
        metrics.STALLED.set(2)
        metrics.PURCHASES_BY_STATE.replace({("stalled",): 2, ("needs_attention",): 1})
        metrics.OUTBOX_BACKLOG.set(7)
        metrics.QUEUE_MESSAGES.set(4, "purchases.quote")
        leading = scheduler_exposition()
        assert leading["fulfil_scheduler_leader"] == [({}, 1.0)]
        assert leading["fulfil_purchases_stalled"] == [({}, 2.0)]
        assert sorted(leading["fulfil_purchases"], key=str) == sorted(
            [({"state": "stalled"}, 2.0), ({"state": "needs_attention"}, 1.0)], key=str)
        assert leading["fulfil_outbox_backlog"] == [({}, 7.0)]
        assert leading["fulfil_queue_messages"] == [({"queue": "purchases.quote"}, 4.0)]

        metrics.set_scheduler_leader(False)  # stepping down: a standby reports no stale numbers
        standby = scheduler_exposition()
        assert standby["fulfil_scheduler_leader"] == [({}, 0.0)]
        assert all(samples == [] for name, samples in standby.items() if name != "fulfil_scheduler_leader")
        assert set(standby) == SCHEDULER_ONLY  # still described (HELP/TYPE), without samples
    finally:
        metrics.set_scheduler_leader(False)


def test_labelled_scheduler_gauges_check_their_labels() -> None:
    import pytest

    with pytest.raises(ValueError):
        metrics.DEAD_LETTERS.set(1)
    with pytest.raises(ValueError):
        metrics.STALLED.set(1, "extra")


def test_live_gauge_files_of_dead_processes_are_pruned_and_counters_kept(tmp_path: Path) -> None:
    finished = subprocess.Popen(["true"])
    finished.wait()
    dead, alive = finished.pid, os.getpid()
    names = [f"gauge_livesum_{dead}.db", f"gauge_liveall_{dead}.db", f"gauge_livemostrecent_{dead}.db",
             f"gauge_liveall_{alive}.db", f"counter_{dead}.db", f"histogram_{dead}.db", f"gauge_all_{dead}.db"]
    for name in names:
        (tmp_path / name).write_bytes(b"")

    removed = metrics.prune_dead_process_files(str(tmp_path))

    assert sorted(removed) == sorted(names[:3])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[3:])
