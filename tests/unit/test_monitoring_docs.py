"""docs/monitoring: alert rules checked and unit-tested by promtool, dashboard queries valid and
naming only metrics that exist.

promtool comes with Debian's `prometheus` package, which scripts/bootstrap.sh installs: these
tests fail, never skip, without it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from tests.support.servers import REPO

MONITORING = REPO / "docs" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = MONITORING / "alerts.test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"

SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"), "info": ("_info",), "unknown": ("",)}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run scripts/bootstrap.sh as root (installs Debian's `prometheus` package, "
                    "which provides promtool)", pytrace=False)
    return path


def run_promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def dramatiq_metrics() -> list[MetricWrapperBase]:
    """The metrics of dramatiq's Prometheus middleware, as a worker process creates them."""
    from dramatiq.middleware.prometheus import Prometheus

    saved = {k: os.environ.get(k) for k in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")}
    middleware = Prometheus()
    try:
        middleware.after_process_boot(None)  # creates them in a registry of its own; sets the env (restored)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return [m for m in vars(middleware).values() if isinstance(m, MetricWrapperBase)]


def known_series() -> set[str]:
    """Every series name our processes can export: our registry (fulfilment.metrics), dramatiq's, `up`."""
    import fulfilment.metrics  # noqa: F401  registers ours

    families = [*REGISTRY.collect()]
    for metric in dramatiq_metrics():
        families.extend(metric.collect())
    names = {"up"}
    for family in families:
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


# --- PromQL: the metric names an expression reads --------------------------------------------

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
            "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    text = expr.replace("$__rate_interval", "5m")
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # strings (label values)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        following = text[match.end():].lstrip()
        if word.lower() in KEYWORDS or following.startswith("(") or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def test_metric_names_are_read_from_promql() -> None:
    expr = ('sum by (le, operation) (rate(fulfil_partner_call_seconds_bucket{outcome="ok"}[$__rate_interval])) '
            '/ ignoring (x) max(up{job=~"a|b"}) and on () (fulfil_scheduler_leader or vector(0)) > 0')
    assert metric_names(expr) == {"fulfil_partner_call_seconds_bucket", "up", "fulfil_scheduler_leader"}


# --- alert rules ------------------------------------------------------------------------------

def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alert_rules_pass_promtool_check() -> None:
    output = run_promtool("check", "rules", ALERTS.name).stdout
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    assert "SUCCESS" in run_promtool("test", "rules", ALERT_TESTS.name).stdout


def test_every_alert_is_unit_tested_firing() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts - fired == set(), "alerts without a test where they fire"
    assert fired - alerts == set(), "tests of alerts that do not exist"


def test_the_alerts_the_issue_asks_for_are_there() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    wanted = {
        "FulfilOrphanOrder": "fulfil_orphan_orders_total",
        "FulfilPurchasesStalled": "fulfil_purchases_stalled",
        "FulfilPurchasesNeedAttention": 'fulfil_purchases{state="needs_attention"}',
        "FulfilDeadLetters": "fulfil_dead_letters",
        "FulfilAccountPaused": 'fulfil_purchases{state="paused"}',
        "FulfilSchedulerLagGrowing": "fulfil_scheduler_lag_seconds",
        "FulfilSchedulerNoLeader": "sum(fulfil_scheduler_leader)",
        "FulfilSchedulerTwoLeaders": "sum(fulfil_scheduler_leader) > 1",
        "FulfilIntakeWaitingForDatabase": "fulfil_intake_waiting_for_database",
        "FulfilOutboxBacklogOld": "fulfil_outbox_oldest_age_seconds",
        "FulfilPartnerErrors": "fulfil_partner_call_errors_total",
        "FulfilUnroutedEvents": "fulfil_unrouted_events",
        "FulfilUnroutedEventsNearLimit": "fulfil_unrouted_events_limit",
    }
    for alert, fragment in wanted.items():
        assert fragment in exprs.get(alert, ""), alert
    assert {rule["alert"]: rule["labels"]["severity"] for rule in alert_rules()}["FulfilOrphanOrder"] == "page"
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_alert_rules_and_their_tests_use_only_metrics_that_exist() -> None:
    known = known_series()
    for rule in alert_rules():
        unknown = metric_names(rule["expr"]) - known
        assert unknown == set(), f"{rule['alert']} reads unknown metrics {unknown}"
    for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for series in test.get("input_series", []):
            name = series["series"].split("{", 1)[0]
            assert name in known, f"alerts.test.yml feeds an unknown metric {name}"


def test_the_example_prometheus_config_is_valid_and_loads_the_rules() -> None:
    output = run_promtool("check", "config", PROMETHEUS_CONFIG.name).stdout
    assert "1 rule files found" in output
    jobs = [job["job_name"] for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]]
    assert jobs == ["fulfil-worker", "fulfil-scheduler"]


# --- the Grafana dashboard --------------------------------------------------------------------

def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(f"{panel['title']} {target['refId']}", target["expr"])
            for panel in dashboard_panels(dashboard["panels"]) for target in panel.get("targets", [])]


def test_the_dashboard_is_grafana_json_with_a_query_in_every_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    panels = list(dashboard_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_every_dashboard_query_reads_metrics_that_exist() -> None:
    known = known_series()
    queried: set[str] = set()
    for where, expr in dashboard_queries():
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names - known == set(), f"{where}: unknown metrics {names - known} in {expr!r}"
        queried |= names
    # Each gauge and counter of ours is on the dashboard somewhere.
    import fulfilment.metrics as ours

    for value in vars(ours).values():
        if isinstance(value, MetricWrapperBase | ours.SchedulerGauge):
            name = value._name if isinstance(value, MetricWrapperBase) else value.name
            assert any(q.startswith(name) for q in queried), f"{name} is not on the dashboard"


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses expressions in rule files: check the dashboard's as recording rules.
    rules = [{"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "5m")}
             for i, (_, expr) in enumerate(dashboard_queries())]
    (tmp_path / "dashboard-queries.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    output = run_promtool("check", "rules", "dashboard-queries.yml", cwd=tmp_path).stdout
    assert f"SUCCESS: {len(rules)} rules found" in output
