"""The benchmark's statistics and report (bench/stats.py, bench/report.py): pure code, no servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report, stats


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
