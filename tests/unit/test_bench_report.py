"""The benchmark's statistics and report (bench/stats.py, bench/report.py): pure code, no servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import costs, latency, report, stats


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert stats.percentile(values, 0) == 1
    assert stats.percentile(values, 100) == 10
    assert stats.percentile(values, 50) == pytest.approx(5.5)
    assert stats.percentile(values, 95) == pytest.approx(9.55)  # numpy.percentile(values, 95)
    assert stats.percentile(values, 99) == pytest.approx(9.91)
    assert stats.percentile([7], 99) == 7
    assert stats.percentile([3, 1, 2], 50) == 2  # unsorted input


def test_percentile_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        stats.percentile([], 50)
    with pytest.raises(ValueError):
        stats.percentile([1, 2], 101)


def test_median_spread_ratio_rate() -> None:
    assert stats.median([5, 1, 3]) == 3
    assert stats.median([4, 1, 3, 2]) == pytest.approx(2.5)
    assert stats.spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert stats.ratio(30, 120) == pytest.approx(0.25)
    assert stats.ratio(1, 0) is None
    assert stats.rate(300, 2.0) == 150
    with pytest.raises(ValueError):
        stats.rate(300, 0)


def test_latency_summary_is_in_milliseconds() -> None:
    summary = stats.latency_summary([0.1 * i for i in range(1, 101)])  # 0.1 s .. 10 s
    assert summary["count"] == 100
    assert summary["p50_ms"] == pytest.approx(5050)
    assert summary["p99_ms"] == pytest.approx(9901)
    assert summary["max_ms"] == pytest.approx(10000)


def _run(per_s: float, p50: float = 100.0) -> dict:
    return {"purchases": 300, "per_s": per_s, "duration_s": 300 / per_s, "submit_s": 0.5, "machine_cpu_busy": 0.9,
            "cpu_seconds": {"workers": 6.0}, "latency": {"p50_ms": p50, "p95_ms": 2 * p50, "p99_ms": 3 * p50},
            "latency_from_submit": {"p50_ms": 10 * p50, "p95_ms": 20 * p50, "p99_ms": 30 * p50}}


def test_ratio_is_taken_between_the_medians_of_the_repeats() -> None:
    summary = report.throughput_summary({"raw": [_run(100), _run(300), _run(200)],
                                         "pipeline": [_run(10, 50), _run(50, 70), _run(40, 60)]})
    assert summary["raw_per_s"]["median"] == 200
    assert summary["pipeline_per_s"]["median"] == 40
    assert summary["ratio_pipeline_over_raw"] == pytest.approx(0.2)
    assert summary["pipeline_latency_ms"]["p50_ms"]["median"] == 60
    assert summary["pipeline_latency_from_submit_ms"]["p99_ms"]["median"] == 1800
    assert report.cpu_ms(_run(100)) == pytest.approx(20)


def test_worker_cpu_is_also_compared_with_the_raw_chain_of_the_same_repeat() -> None:
    raw = [_run(100), _run(100)]
    pipe = [_run(40), _run(40)]
    raw[0]["cpu_seconds"] = {"workers": 0.9}  # 3 ms per chain, a slow moment of the machine
    pipe[0]["cpu_seconds"] = {"workers": 3.0, "sandbox": 0.6}  # 10 ms and 2 ms per purchase
    raw[1]["cpu_seconds"] = {"workers": 0.6}  # 2 ms
    pipe[1]["cpu_seconds"] = {"workers": 1.5, "sandbox": 0.3}  # 5 ms and 1 ms
    summary = report.throughput_summary({"raw": raw, "pipeline": pipe})
    assert report.cpu_over_raw(summary["runs"]) == pytest.approx([10 / 3, 2.5])
    assert summary["pipeline_per_purchase"]["worker_cpu_over_raw"]["median"] == pytest.approx((10 / 3 + 2.5) / 2)
    assert [report.sandbox_cpu_ms(r) for r in pipe] == pytest.approx([2.0, 1.0])


def test_the_floor_is_reported_beside_the_raw_chain() -> None:
    summary = report.throughput_summary({"raw": [_run(400)], "pipeline": [_run(150)], "floor": [_run(250)]})
    assert summary["ratio_pipeline_over_floor"] == pytest.approx(0.6)
    text = "\n".join(report._throughput(summary, 300))
    assert "(g) floor: (a) + the 2 partner calls" in text and "0.600" in text
    assert "(g) per chain, on the servers" in text


def test_render_and_json(tmp_path: Path) -> None:
    results = {
        "started_at": "2026-01-01T00:00:00+00:00", "wall_s": 90, "command": "python -m bench --quick",
        "options": {"purchases": 300}, "settings": {"processes": 2, "threads": 4},
        "throughput": report.throughput_summary({"raw": [_run(200)], "pipeline": [_run(50)]}),
        "errors": {"(d) scheduler tick cost": "BenchError: timed out"},
    }
    text = report.render(results)
    assert "(c) ratio (b)/(a) of the medians" in text and "0.250" in text
    assert "ERRORS" in text and "timed out" in text
    path = tmp_path / "out" / "bench.json"
    report.write_json(results, path)
    assert json.loads(path.read_text())["throughput"]["ratio_pipeline_over_raw"] == pytest.approx(0.25)


def test_num_formats_for_the_table() -> None:
    assert report.num(1234.567) == "1,234.6"
    assert report.num(0.25, 3) == "0.250"
    assert report.num(None) == "-"


# --- per-purchase costs (bench/costs.py), (f) open-loop latency (bench/latency.py) ----------------

def _snapshot(statements: dict[int, tuple[str, int]] | None, bench: int, queues: dict[str, int],
              database: dict[str, int]) -> costs.Snapshot:
    return costs.Snapshot(statements=statements, bench_statements=bench, queues=queues, database=database)


def _database(commits: int, rollbacks: int = 0, inserted: int = 0, updated: int = 0) -> dict[str, int]:
    return {"xact_commit": commits, "xact_rollback": rollbacks, "tup_inserted": inserted, "tup_updated": updated,
            "tup_deleted": 0}


def test_costs_per_purchase_leave_out_the_benchmarks_own_statements_and_transactions() -> None:
    before = _snapshot({1: ("BEGIN", 10), 2: ("UPDATE purchases SET state = $1", 5),
                        3: (costs.BENCH_TAG + "SELECT count(*) FROM purchases", 7)},
                       bench=7, queues={"purchases.intake": 3, "purchases.quote": 3},
                       database=_database(100, 1, 50, 20))
    after = _snapshot({1: ("BEGIN", 30), 2: ("UPDATE purchases SET state = $1", 25), 4: ("COMMIT", 20),
                       3: (costs.BENCH_TAG + "SELECT count(*) FROM purchases", 19), 5: ("SELECT 1", 10)},
                      bench=21, queues={"purchases.intake": 13, "purchases.quote": 13, "purchases.quote.DQ": 0},
                      database=_database(144, 3, 90, 40))
    found = costs.per_purchase(before, after, 10, bench_statements=21, unavailable=None, settle_seconds=11)
    assert found["statements_total"] == 20 + 20 + 20 + 10  # the bench's 12 are not in it
    assert found["statements"] == pytest.approx(7.0)
    assert found["statements_begin_commit_rollback"] == pytest.approx(4.0)
    assert [s["query"] for s in found["top_statements"]] == [
        "BEGIN", "COMMIT", "UPDATE purchases SET state = $1", "SELECT 1"]  # most called first, then by text
    assert found["transactions"] == pytest.approx((44 + 2 - 14) / 10)  # 14 autocommit statements of the bench
    assert found["transactions_without_begin"] == pytest.approx(3.2 - 2.0)  # e.g. the pool's pre-pings
    assert found["rollbacks"] == pytest.approx(0.2)
    assert found["rows_written"] == pytest.approx(6.0)
    assert found["enqueued"] == pytest.approx(2.0)
    assert found["enqueued_by_queue"] == {"purchases.intake": 1.0, "purchases.quote": 1.0}


def test_costs_without_pg_stat_statements_or_queue_counters_say_so() -> None:
    before = _snapshot(None, 0, {"q": 1}, _database(10))
    after = _snapshot(None, 2, {"q": -1}, _database(22))
    found = costs.per_purchase(before, after, 5, bench_statements=2, unavailable="not loaded", settle_seconds=0)
    assert found["statements"] is None and found["statements_unavailable"] == "not loaded"
    assert found["transactions"] == pytest.approx(2.0)
    assert found["enqueued"] is None


def test_queue_counts_are_read_from_rabbitmqctl_eval_output() -> None:
    output = '[{"purchases.intake",301},\n {"purchases.intake.DQ",0},\n {"fulfilment.events.unrouted",-1}]\n'
    assert costs.parse_queue_counts(output) == {"purchases.intake": 301, "purchases.intake.DQ": 0,
                                                "fulfilment.events.unrouted": -1}
    with pytest.raises(ValueError):
        costs.enqueued_by_queue('x">>, []), os:cmd("true')


def test_open_loop_sends_by_the_clock_not_after_the_previous_send() -> None:
    now = [100.0]
    sent: list[tuple[str, float]] = []

    def submit(request_id: str) -> None:
        sent.append((request_id, now[0]))
        now[0] += 0.25 if request_id == "p-1" else 0.001  # one slow confirm

    def sleep(seconds: float) -> None:
        now[0] += seconds

    offsets = latency.schedule(10, 0.5)  # 10/s for 0.5 s: due at 0, 0.1, 0.2, 0.3, 0.4
    assert offsets == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])
    found = latency.open_loop(submit, offsets, prefix="p", clock=lambda: now[0], sleep=sleep, wall=lambda: now[0] + 1000)
    started = 100.05
    times = [at for _, at in sent]
    assert times[0] == pytest.approx(started) and times[1] == pytest.approx(started + 0.1)
    # p-1's confirm took 0.25 s: p-2 and p-3 (due at +0.2, +0.3) go at once, late; p-4 is on time again.
    assert times[2] == pytest.approx(started + 0.35) and times[3] == pytest.approx(started + 0.351)
    assert times[4] == pytest.approx(started + 0.4)
    assert found["lateness_s"] == pytest.approx([0, 0, 0.15, 0.051, 0])
    assert found["due"]["p-3"] == pytest.approx(started + 0.3 + 1000)  # on the wall clock
    assert found["confirmed"]["p-1"] == pytest.approx(started + 0.1 + 0.25 + 1000)
    with pytest.raises(ValueError):
        latency.schedule(0, 60)


def _level(fraction: float) -> dict:
    summary = stats.latency_summary([0.02, 0.03, 0.05])
    return {"fraction": fraction, "target_per_s": 30 * fraction, "purchases": 100, "seconds": 60, "sent_per_s": 30 * fraction,
            "sender_late_ms": {"p99": 1.0, "max": 2.0, "over_10ms": 0}, "latency_from_submit": summary,
            "latency_from_schedule": summary, "latency_from_received": summary, "machine_cpu_busy": 0.5,
            "cpu_seconds": {"workers": 1.0}}


def test_render_per_purchase_costs_latency_and_flags(tmp_path: Path) -> None:
    raw, pipe = _run(200), _run(50)
    raw["costs"] = {"statements": None, "statements_unavailable": "not loaded", "transactions": 6.0,
                    "rows_written": 3.0, "enqueued": 3.0}
    pipe["costs"] = {"statements": 30.5, "statements_begin_commit_rollback": 8.0, "transactions": 10.7,
                     "rows_written": 19.0, "enqueued": 7.0, "enqueued_by_queue": {"purchases.intake": 1.0},
                     "top_statements": [{"per_purchase": 3.0, "calls": 90, "query": "SELECT 1"}]}
    throughput = report.throughput_summary({"raw": [raw], "pipeline": [pipe]})
    assert throughput["pipeline_per_purchase"]["statements"]["median"] == pytest.approx(30.5)
    assert "statements" not in throughput["raw_per_purchase"]
    assert throughput["raw_per_purchase"]["worker_cpu_ms"]["median"] == pytest.approx(20)
    assert throughput["pipeline_per_purchase"]["worker_cpu_over_raw"]["median"] == pytest.approx(1.0)
    job = {"ms": {"median": 100.0}, "items_per_tick": 500, "plan": {"execution_ms": 1.0, "scans": []}, "sql": "x"}
    results = {
        "started_at": "2026-01-01T00:00:00+00:00", "wall_s": 90, "command": "python -m bench",
        "options": {"purchases": 300}, "settings": {"processes": 2, "threads": 4},
        "throughput": throughput,
        "latency": {"max_per_s": 30.0, "seconds": 60, "max_source": "median of (b) in this run",
                    "levels": [_level(0.5), _level(0.25)]},
        "scheduler": {"ticks": 7, "batch_size": 500, "sizes": [{
            "purchases": 1000, "tick_ms": 400, "seq_scans_on_watched": {},
            "loaded": {"load_s": 1, "vacuum_analyze_s": 1},
            "jobs": {key: dict(job) for key in ("redrive", "deadlines", "outbox", "gauges")}}]},
        "errors": {},
    }
    text = report.render(results)
    assert "DB statements (incl. BEGIN/COMMIT)" in text and "30.5" in text
    assert "DB statements: - (not loaded" in text
    assert "worker CPU / (a)'s in the same repeat" in text
    assert "RabbitMQ messages enqueued (publishes)" in text and "purchases.intake 1" in text
    assert "(f) open-loop latency" in text and "0.5 max" in text and "0.25 max" in text
    assert "ms from confirmed submit to awaiting_transfer" in text
    assert "flag_near_deadlines, ms per flag" in text and "0.200" in text
    report.write_json(results, tmp_path / "bench.json")


def test_a_cost_window_that_cannot_read_the_servers_leaves_the_run_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(vhost: str) -> dict[str, int]:
        raise RuntimeError("rabbitmqctl eval failed")

    monkeypatch.setattr(costs, "statements_available", lambda: "not loaded")
    monkeypatch.setattr(costs, "enqueued_by_queue", fails)
    window = costs.CostWindow("db", "vhost", conn=None, settle_seconds=0)  # type: ignore[arg-type]

    class Conn:
        statements = 0

    window.conn = Conn()  # type: ignore[assignment]
    window.begin()
    assert window.finish(10) == {"purchases": 10, "unavailable": "RuntimeError: rabbitmqctl eval failed"}
