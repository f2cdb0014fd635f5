"""A real Prometheus (Debian's `prometheus`) scrapes real workers and a real scheduler, with the
shipped configuration (docs/monitoring/prometheus.yml) and alert rules (docs/monitoring/alerts.yml).

Its own vhost and metrics directory: the numbers it sees are this module's alone.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest
import yaml

from fulfilment.rabbitmq.queues import QUEUES
from tests.support import servers
from tests.support.processes import ManagedProcess, start_scheduler, start_workers, wait_for_consumers
from tests.support.servers import REPO, free_port

MONITORING = REPO / "docs" / "monitoring"
WORKER_PROCESSES = 2


@dataclass
class Monitored:
    env: dict[str, str]
    workers: ManagedProcess
    scheduler: ManagedProcess
    prometheus: ManagedProcess
    url: str

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5).json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def api(self, path: str) -> dict[str, Any]:
        body = httpx.get(f"{self.url}/api/v1/{path}", timeout=5).json()
        assert body["status"] == "success", body
        return dict(body["data"])

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}:\n{p.log_tail(20)}" for p in (self.prometheus, self.scheduler, self.workers))


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail("prometheus not found: run scripts/bootstrap.sh as root (installs Debian's `prometheus` package)",
                    pytrace=False)
    return path


def write_config(directory: Path, worker: str, scheduler: str) -> Path:
    """The shipped example, pointed at this test's processes and scraping every second."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    targets = {"fulfil-worker": worker, "fulfil-scheduler": scheduler}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    shutil.copy(MONITORING / "alerts.yml", directory / "alerts.yml")
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def wait_for(check: Callable[[], Any], timeout: float, what: str, monitored: Monitored | None = None) -> Any:
    """Poll until `check` returns something truthy without raising; fail with its last complaint."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (AssertionError, httpx.HTTPError, KeyError, ValueError) as error:
            last = error
        else:
            if result:
                return result
            last = result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: {last!r}\n"
                         + (monitored.logs() if monitored else ""))


@pytest.fixture(scope="module")
def monitored(app_env: dict[str, str], log_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    binary = prometheus_binary()
    vhost = servers.create_vhost("fulfil_prom")
    work = tmp_path_factory.mktemp("prometheus")
    (work / "worker-metrics").mkdir()
    env = {**app_env, "BROKER_URL": vhost.url, "METRICS_PORT": str(free_port()),
           "dramatiq_prom_port": str(free_port()), "dramatiq_prom_db": str(work / "worker-metrics")}
    started: list[ManagedProcess] = []
    try:
        workers = start_workers(env, log_dir, processes=WORKER_PROCESSES, threads=2, name="prom-workers")
        started.append(workers)
        scheduler = start_scheduler(env, log_dir, name="prom-scheduler")
        started.append(scheduler)
        port = free_port()
        config = write_config(work, f"127.0.0.1:{env['dramatiq_prom_port']}", f"127.0.0.1:{env['METRICS_PORT']}")
        prometheus = ManagedProcess("prometheus", [
            binary, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
        ], env, log_dir).start()
        started.append(prometheus)
        wait_for_consumers(env["BROKER_URL"], workers, expected=WORKER_PROCESSES)
        running = Monitored(env, workers, scheduler, prometheus, f"http://127.0.0.1:{port}")
        wait_for(lambda: httpx.get(f"{running.url}/-/ready", timeout=2).status_code == 200, 30,
                 "Prometheus to be ready", running)
        yield running
    finally:
        for process in reversed(started):
            process.stop()
        servers.delete_vhost(vhost)


def publish_invalid_request(broker_url: str) -> str:
    """An intake message a foreign service might send: a request without most of its fields."""
    message_id = str(uuid.uuid4())
    body = json.dumps({"queue_name": "purchases.intake", "actor_name": "submit_purchase",
                       "args": [{"request_id": f"prom-{message_id}", "quantity": 2}], "kwargs": {}, "options": {},
                       "message_id": message_id, "message_timestamp": int(time.time() * 1000)}).encode()
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("", "purchases.intake", body, pika.BasicProperties(delivery_mode=2))
    finally:
        connection.close()
    return message_id


def by_job(results: list[dict[str, Any]]) -> dict[str, list[tuple[dict[str, str], float]]]:
    jobs: dict[str, list[tuple[dict[str, str], float]]] = {}
    for result in results:
        jobs.setdefault(result["metric"].get("job", ""), []).append((result["metric"], float(result["value"][1])))
    return jobs


def test_prometheus_scrapes_workers_and_scheduler_and_evaluates_the_alert_rules(monitored: Monitored) -> None:
    # Both targets up.
    def both_up() -> bool:
        up = {job: [value for _, value in series] for job, series in by_job(monitored.query("up")).items()}
        assert up == {"fulfil-worker": [1.0], "fulfil-scheduler": [1.0]}, up
        return True

    wait_for(both_up, 30, "both targets to be up", monitored)

    # Our counters from the workers, aggregated over the worker processes (no pid label).
    publish_invalid_request(monitored.env["BROKER_URL"])

    def rejected() -> bool:
        series = by_job(monitored.query("fulfil_rejected_requests_total"))
        assert [(labels["code"], value) for labels, value in series.get("fulfil-worker", [])] \
            == [("INVALID_REQUEST", 1.0)], series
        return True

    wait_for(rejected, 30, "the worker's rejected-request counter", monitored)
    per_process = monitored.query('count by (job, __name__) ({__name__=~"fulfil_.+", pid!=""})')
    assert per_process == [], f"per-process series: {per_process}"

    # The scheduler's gauges, from the scheduler only: exactly one leader series in all.
    leader = by_job(monitored.query("fulfil_scheduler_leader"))
    assert {job: [v for _, v in s] for job, s in leader.items()} == {"fulfil-scheduler": [1.0]}, leader
    gauges = {
        "fulfil_queue_messages": len(QUEUES),  # one per main queue
        "fulfil_dead_letters": len(QUEUES),
        "fulfil_purchases_stalled": 1,
        "fulfil_scheduler_lag_seconds": 1,
        "fulfil_outbox_backlog": 1,
        "fulfil_outbox_oldest_age_seconds": 1,
        "fulfil_unrouted_events": 1,
    }
    for name, count in gauges.items():
        series = by_job(monitored.query(name))
        assert set(series) == {"fulfil-scheduler"} and len(series["fulfil-scheduler"]) == count, (name, series)

    # The shipped alert rules load and evaluate; the rejected request, dead-lettered, shows up as a
    # pending FulfilDeadLetters alert once the scheduler's gauges job (every 15 s) has seen it.
    def rules_evaluated() -> bool:
        groups = monitored.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert len(rules) == len(yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"][0]["rules"])
        assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r["health"], r.get("lastError"))
                                                               for r in rules if r["health"] != "ok"]
        return True

    wait_for(rules_evaluated, 15, "the alert rules to be evaluated", monitored)

    def dead_letter_alert() -> bool:
        alerts = monitored.api("alerts")["alerts"]
        found = [(a["labels"]["alertname"], a["labels"].get("queue"), a["state"]) for a in alerts]
        assert ("FulfilDeadLetters", "purchases.intake.XQ", "pending") in found, found
        return True

    wait_for(dead_letter_alert, 30, "FulfilDeadLetters to be pending", monitored)
    # One scheduler leads: neither leadership alert is even pending.
    active = {a["labels"]["alertname"] for a in monitored.api("alerts")["alerts"]}
    assert not active & {"FulfilSchedulerNoLeader", "FulfilSchedulerTwoLeaders"}, active
