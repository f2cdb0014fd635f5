"""The HA part of the benchmark reports medians over repeats and the ratios of one run (bench/ha.py)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import ha


def latency(p99_s: float) -> dict[str, Any]:
    return {"levels": [{"latency_from_submit": {"p99_ms": p99_s * 1000}}]}


def test_ratios_are_medians_over_repeats_and_pair_each_repeat_with_its_single_node_run() -> None:
    single = {"throughput": {"pipeline_per_s": {"median": 20.0}, "runs": {"pipeline": [
        {"per_s": 20.0}, {"per_s": 10.0}, {"per_s": 25.0}]}}, "latency": latency(0.5)}
    on_ha = {"runs": [{"per_s": 12.0}, {"per_s": 6.0}, {"per_s": 20.0}],
             "latency_runs": [latency(0.9), latency(1.5), latency(0.6)]}
    r = ha.ratios(single, on_ha)
    assert r["ha_per_s"] == {"median": 12.0, "min": 6.0, "max": 20.0, "n": 3}
    assert r["throughput_ratio"] == pytest.approx(12.0 / 20.0)  # of the medians
    assert r["throughput_ratio_by_repeat"] == {"median": pytest.approx(0.6), "min": pytest.approx(0.6),
                                               "max": pytest.approx(0.8), "n": 3}
    assert r["ha_p99_s"]["median"] == pytest.approx(0.9) and r["ha_p99_s"]["n"] == 3
    assert r["p99_ratio"] == pytest.approx(0.9 / 0.5)
    text = ha.render({"ratios": r})
    assert "HA 12.0 (median of 3, 6.0-20.0)" in text
    assert "HA/single 0.60 (of the medians); repeat by repeat 0.60 (median of 3, 0.60-0.80)" in text
    assert "HA 0.900 s (median of 3, 0.600-1.500)   HA/single 1.80" in text


def test_nothing_measured_on_the_ha_stack_reports_no_ratio() -> None:
    r = ha.ratios({"throughput": {"pipeline_per_s": {"median": 20.0}}}, {"runs": [], "latency_runs": []})
    assert r["ha_per_s"] is None and r["throughput_ratio"] is None and r["p99_ratio"] is None
    assert "HA -" in ha.render({"ratios": r})
