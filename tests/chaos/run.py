"""Run purchases at volume while killing workers, restarting the servers and injecting faults.

Sequence:
1. a private Postgres + RabbitMQ pair (servers.py), a fresh database and vhost, the sandbox
   with a distinctive client secret and token prefix, `dramatiq workers` and `fulfil scheduler`,
   and a consumer queue bound to `fulfilment.events`;
2. partner faults: >= 20 % 5xx (JSON and plain bodies), 429s with Retry-After, latency, short
   quote TTLs, and "commit the order then drop the connection";
3. N purchases submitted; while they run, worker processes are SIGKILLed at random moments
   (a supervisor restarts them), RabbitMQ is restarted once and Postgres once;
4. faults cleared, the pipeline left to finish, then every check of checks.py.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos import servers as chaos_servers

FINAL_OR_HELD = ("transfer_complete", "transfer_expired", "cancelled", "failed", "stalled", "needs_attention")


@dataclass
class ChaosConfig:
    purchases: int = 1000
    kill_every: tuple[float, float] = (8.0, 20.0)  # seconds between worker kills, drawn uniformly
    timeout: float = 900.0  # for the chaos phase, after submission
    settle: float = 300.0  # then, faults off: how long everything may take to finish
    port_block: int = 22  # private servers on ports 22432, 22672, ...
    seed: int = 1
    processes: int = 2
    threads: int = 4


@dataclass
class ChaosResult:
    config: dict[str, Any]
    seconds: float = 0.0
    kills: int = 0
    restarts: list[str] = field(default_factory=list)
    faults_injected: dict[str, int] = field(default_factory=dict)
    partner_requests: int = 0
    verdict: dict[str, Any] = field(default_factory=dict)
    ok: bool = False


def _worker_pids(main_pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == main_pid:
            children.append(int(stat.parent.name))
    return children


def run(config: ChaosConfig, log_dir: Path) -> ChaosResult:
    """Run it; this process's environment and settings are restored afterwards."""
    from fulfilment.settings import get_settings

    saved = dict(os.environ)
    try:
        return _run(config, log_dir)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def _run(config: ChaosConfig, log_dir: Path) -> ChaosResult:
    chaos_servers.use_private_servers(config.port_block)
    chaos_servers.services(config.port_block, "start")
    # Imported after the environment points at the private servers.
    from fulfilment.settings import get_settings
    from tests.chaos import checks
    from tests.conftest import FAST_SETTINGS
    from tests.support import servers
    from tests.support.events import EventListener
    from tests.support.pipeline import in_states, wait_until
    from tests.support.processes import start_scheduler, start_workers, wait_for_consumers
    from tests.support.sandbox import Sandbox

    rng = random.Random(config.seed)
    result = ChaosResult(config=asdict(config))
    secret = "chaos-secret-" + secrets.token_hex(12)
    token_prefix = "chaostok-" + secrets.token_hex(4) + "-"
    database = servers.create_database("fulfil_chaos")
    servers.migrate(database)
    vhost = servers.create_vhost("fulfil_chaos")
    sandbox = Sandbox(env={
        "SANDBOX_PARTNERS": json.dumps([{"client_id": "chaos-partner", "client_secret": secret}]),
        "SANDBOX_TOKEN_PREFIX": token_prefix,
        "SANDBOX_TOKEN_TTL_SECONDS": "20",  # tokens expire during the run: re-authentication under load
        "SANDBOX_SEATS_PER_ROW": "1000000",
        "SANDBOX_TRANSFER_AFTER_SECONDS": "3",
        "SANDBOX_SEED": str(config.seed),
    }, log_path=log_dir / "sandbox.log").start()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "BROKER_", "TBB_"))},
        **FAST_SETTINGS,
        "DATABASE_URL": database.url, "BROKER_URL": vhost.url, "TBB_BASE_URL": sandbox.url,
        "TBB_CLIENT_ID": "chaos-partner", "TBB_CLIENT_SECRET": secret,
        "MAX_REQUOTES": "10", "QUOTE_SAFETY_MARGIN_SECONDS": "0.5", "CLAIM_LEASE_SECONDS": "10",
        "ACTOR_MAX_RETRIES": "20", "METRICS_PORT": "0",
        "dramatiq_prom_host": "127.0.0.1", "dramatiq_prom_port": str(servers.free_port()),
        "dramatiq_prom_db": tempfile.mkdtemp(prefix="chaos-prom-"),
    }
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "BROKER_URL", "TBB_BASE_URL", "TBB_CLIENT_ID",
                                           "TBB_CLIENT_SECRET")})
    get_settings.cache_clear()
    listener = EventListener(vhost.url, durable=True)
    workers = start_workers(env, log_dir, processes=config.processes, threads=config.threads, name="chaos-workers")
    scheduler = start_scheduler(env, log_dir, name="chaos-scheduler")
    worker_generation = 0
    purchase_ids: list[uuid.UUID] = []
    started = time.monotonic()
    try:
        wait_for_consumers(vhost.url, workers, expected=config.processes)
        sandbox.configure(quote_ttl_seconds=8)
        sandbox.set_faults({
            "*": {"error_rate": 0.25, "rate_limit_rate": 0.05, "retry_after_seconds": 0.3, "latency_ms": 5},
            "create_order": {"error_rate": 0.25, "rate_limit_rate": 0.05, "retry_after_seconds": 0.3,
                             "latency_ms": 20, "drop_after_commit_rate": 0.1},
        })
        from fulfilment.publish import Publisher
        from tests.support.factories import request

        with Publisher(vhost.url) as publisher:
            sections = ["101", "102", "103", "201", "202", "301"]
            for i in range(config.purchases):
                purchase_ids.append(publisher.submit(request(
                    request_id=f"chaos-{config.seed}-{i}", section_name=sections[i % len(sections)],
                    quantity=1 + i % 4, row_name=None if i % 3 else "ABCDE"[i % 5])))

        rabbit_restart_at = 0.3  # of purchases done
        postgres_restart_at = 0.6
        next_kill = time.monotonic() + rng.uniform(*config.kill_every)
        deadline = time.monotonic() + config.timeout
        while time.monotonic() < deadline:
            done = _count_done(purchase_ids)
            progress = done / len(purchase_ids)
            if progress >= 0.97 and result.restarts == ["rabbitmq", "postgres"]:
                break
            if "rabbitmq" not in result.restarts and progress >= rabbit_restart_at:
                chaos_servers.services(config.port_block, "restart", "rabbitmq")
                result.restarts.append("rabbitmq")
            elif "postgres" not in result.restarts and "rabbitmq" in result.restarts and progress >= postgres_restart_at:
                chaos_servers.services(config.port_block, "restart", "postgres")
                result.restarts.append("postgres")
            if time.monotonic() >= next_kill:
                victims = _worker_pids(workers.pid) or [workers.pid]
                os.kill(rng.choice(victims), signal.SIGKILL)
                result.kills += 1
                next_kill = time.monotonic() + rng.uniform(*config.kill_every)
            if not workers.alive() or not _worker_pids(workers.pid):
                # dramatiq shuts the group down when a worker process dies; the supervisor restarts it.
                workers.kill()
                worker_generation += 1
                workers = start_workers(env, log_dir, processes=config.processes, threads=config.threads,
                                        name=f"chaos-workers-{worker_generation}")
            listener.drain(timeout=0.5)
            time.sleep(0.5)

        counters = sandbox.faults()
        result.faults_injected = {k: v for k, v in counters.get("totals", {}).items()}
        result.partner_requests = sum(sandbox.stats()["requests"].values())
        sandbox.clear_faults()
        sandbox.configure(quote_ttl_seconds=3600)
        if not workers.alive() or not _worker_pids(workers.pid):
            workers.kill()
            workers = start_workers(env, log_dir, processes=config.processes, threads=config.threads,
                                    name="chaos-workers-settle")
        try:
            wait_until(purchase_ids, in_states(*FINAL_OR_HELD), timeout=config.settle)
        except AssertionError:
            pass  # not everything finished in time: the checks below say what is missing
    finally:
        result.seconds = time.monotonic() - started
        # Let the relay publish the last events and the listener collect them, then stop.
        _wait_all_published(timeout=60)
        listener.drain(timeout=5)
        scheduler.stop()
        workers.stop()

    verdict = checks.Verdict()
    checks.check_purchases(purchase_ids, sandbox, verdict)
    checks.check_events(listener.received, verdict)
    outputs = _cli_outputs(env, purchase_ids[:5])
    files = sorted(log_dir.glob("*.log"))
    checks.scan_for_secrets([secret], re.compile(re.escape(token_prefix)), files, outputs, verdict)
    result.verdict = {**asdict(verdict), "states": dict(verdict.states)}
    result.ok = verdict.ok and result.restarts == ["rabbitmq", "postgres"] and result.kills > 0
    listener.close()
    sandbox.stop()
    servers.delete_vhost(vhost)
    servers.drop_database(database)
    chaos_servers.services(config.port_block, "stop")
    return result


def _count_done(ids: list[uuid.UUID]) -> int:
    from sqlalchemy import func, select

    from fulfilment.db import session_scope
    from models import Purchase

    try:
        with session_scope() as session:
            return session.scalar(select(func.count()).where(Purchase.id.in_(ids),
                                                             Purchase.state.in_(FINAL_OR_HELD))) or 0
    except Exception:  # noqa: BLE001  Postgres is being restarted
        return 0


def _wait_all_published(timeout: float) -> None:
    from sqlalchemy import func, select

    from fulfilment.db import session_scope
    from models import OutboxEvent

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as session:
            if not session.scalar(select(func.count()).select_from(OutboxEvent)
                                  .where(OutboxEvent.published_at.is_(None))):
                return
        time.sleep(0.5)


def _cli_outputs(env: dict[str, str], sample: list[uuid.UUID]) -> dict[str, str]:
    commands = [["list", "--limit", "200"], ["dlq", "list"], ["health"],
                *[["status", str(i), "--json"] for i in sample]]
    outputs = {}
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "fulfilment.cli", *command], env=env, capture_output=True,
                              text=True, timeout=120)
        outputs[" ".join(command)] = done.stdout + done.stderr
    return outputs


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "?"


def table(result: ChaosResult) -> str:
    v = result.verdict
    rows = [
        ("purchases", v["purchases"]),
        ("  final states", ", ".join(f"{k}={n}" for k, n in sorted(v["states"].items()))),
        ("worker kills (SIGKILL)", result.kills),
        ("server restarts", ", ".join(result.restarts) or "none"),
        ("partner requests", result.partner_requests),
        ("faults injected", ", ".join(f"{k}={n}" for k, n in sorted(result.faults_injected.items())) or "?"),
        ("  5xx share of requests", f"{_share(result.faults_injected.get('error', 0), result.partner_requests)}"),
        ("partner orders", v["orders"]),
        ("purchases with >1 order", v["duplicates"]),
        ("orders for unknown quotes", v["orphan_orders"]),
        ("orders on expired quotes", v["orders_on_expired_quote"]),
        ("lost (not final, not held)", v["lost"]),
        ("stalled / needs attention", v["stalled"]),
        ("held without a reason", v["held_without_reason"]),
        ("history entries", v["transitions"]),
        ("  without exactly one event", v["transitions_without_one_event"]),
        ("  events unpublished", v["unpublished_events"]),
        ("  events never received", v["events_never_received"]),
        ("  events received twice", v["events_received_twice"]),
        ("secret or token leaks", len(v["secret_leaks"])),
        ("time", f"{result.seconds:.0f} s"),
        ("verdict", "PASS" if result.ok else "FAIL"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
