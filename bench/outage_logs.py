"""Bytes logged per process during a dependency outage (issue 19, point 7: at most 50 KB per process
per minute; one line down, a summary a minute, one line back; tracebacks for unexpected errors only).

    python -m bench.outage_logs [--block 27] [--outage 90] [--purchases 12] [--kinds postgres,rabbitmq,partner]

A private Postgres + RabbitMQ pair (tests/chaos/servers.py, ports <block>432, <block>672, ...; stop
anything else on that block first), both partner sandboxes, `dramatiq workers` (2 processes x 4
threads) and one `fulfil scheduler`. Purchases are submitted and left waiting (TBB transfers come
after 10 minutes: each purchase polls; TM purchases poll their order too), then each outage in turn:

- postgres: `services.sh stop postgres` for --outage seconds (two more purchases submitted meanwhile:
  intake waits for the database), then started again;
- rabbitmq: `services.sh stop rabbitmq` for --outage seconds, then started again;
- partner: the TBB sandbox answers every call 503 for --outage seconds.

For each, the bytes each process wrote to its log from the stop until 20 s after the start, per
minute, and the tracebacks among them. The workers' figure is per worker process (the log of the
`dramatiq workers` group divided by its processes). Prints a table and writes JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SETTLE = 20.0  # seconds after the dependency is back, counted in the window (the "back" lines)
LIMIT_PER_MINUTE = 50_000


@dataclass
class Measured:
    kind: str
    outage_seconds: float
    window_seconds: float
    process: str
    bytes: int
    per_minute: float
    tracebacks: int
    lines: int


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _slice(path: Path, start: int, end: int) -> str:
    with path.open("rb") as fh:
        fh.seek(start)
        return fh.read(end - start).decode(errors="replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outage_logs", description=__doc__.splitlines()[0])
    parser.add_argument("--block", type=int, default=27)
    parser.add_argument("--outage", type=float, default=90.0)
    parser.add_argument("--purchases", type=int, default=12)
    parser.add_argument("--kinds", default="postgres,rabbitmq,partner")
    parser.add_argument("--out", type=Path, default=Path("bench-results/outage-logs.json"))
    args = parser.parse_args(argv)

    from tests.chaos import servers as chaos_servers

    chaos_servers.use_private_servers(args.block)
    chaos_servers.services(args.block, "start")
    from fulfilment.publish import Publisher
    from fulfilment.settings import get_settings
    from tests.conftest import FAST_SETTINGS, TM_TEST_SETTINGS
    from tests.support import factories, servers
    from tests.support.processes import start_scheduler, start_workers, wait_for_consumers
    from tests.support.sandbox import PARTNER_A, Sandbox
    from tests.support.tm_sandbox import TMSandboxProcess

    log_dir = Path(tempfile.mkdtemp(prefix="outage-logs-"))
    database = servers.create_database("fulfil_outage")
    servers.migrate(database)
    vhost = servers.create_vhost("fulfil_outage")
    sandbox = Sandbox(env={"SANDBOX_TRANSFER_AFTER_SECONDS": "600"}, log_path=log_dir / "sandbox.log").start()
    tm_sandbox = TMSandboxProcess(log_path=log_dir / "tm-sandbox.log").start()
    client_id, secret = PARTNER_A
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "BROKER_", "TBB_", "TM_"))},
        **FAST_SETTINGS, **TM_TEST_SETTINGS,
        "TM_BASE_URL": f"{tm_sandbox.url}/partners/v1",
        "DATABASE_URL": database.url, "BROKER_URL": vhost.url, "TBB_BASE_URL": sandbox.url,
        "TBB_CLIENT_ID": client_id, "TBB_CLIENT_SECRET": secret,
        "METRICS_PORT": "0", "dramatiq_prom_host": "127.0.0.1", "dramatiq_prom_port": str(servers.free_port()),
        "dramatiq_prom_db": tempfile.mkdtemp(prefix="outage-prom-"),
    }
    os.environ.update({k: v for k, v in env.items() if k.startswith(("DATABASE_", "BROKER_", "TBB_", "TM_"))})
    get_settings.cache_clear()
    processes = 2
    workers = start_workers(env, log_dir, processes=processes, threads=4, name="outage-workers")
    scheduler = start_scheduler(env, log_dir, name="outage-scheduler")
    results: list[Measured] = []
    try:
        wait_for_consumers(vhost.url, workers, expected=processes)
        tm_sandbox.admin.configure(polling_rate=1.0, polling_wait_seconds=2)  # TM purchases keep polling
        with Publisher(vhost.url) as publisher:
            for i in range(args.purchases):
                publisher.submit(factories.tm_request() if i % 4 == 3 else factories.request())
        time.sleep(20)  # quoted, ordered, waiting for their transfer
        for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
            before = {p.name: _size(p.log_path) for p in (workers, scheduler)}
            started = time.monotonic()
            if kind == "postgres":
                chaos_servers.services(args.block, "stop", "postgres")
                with Publisher(vhost.url) as publisher:  # intake waits for the database
                    publisher.submit(factories.request())
                    publisher.submit(factories.tm_request())
                time.sleep(max(0.0, args.outage - (time.monotonic() - started)))
                chaos_servers.services(args.block, "start", "postgres")
            elif kind == "rabbitmq":
                chaos_servers.services(args.block, "stop", "rabbitmq")
                time.sleep(args.outage)
                chaos_servers.services(args.block, "start", "rabbitmq")
            elif kind == "partner":
                sandbox.set_faults({"*": {"error_rate": 1.0, "error_statuses": [503]}})
                time.sleep(args.outage)
                sandbox.clear_faults()
            else:
                raise SystemExit(f"unknown outage kind {kind!r}")
            outage = time.monotonic() - started
            time.sleep(SETTLE)
            window = time.monotonic() - started
            for process in (workers, scheduler):
                end = _size(process.log_path)
                text = _slice(process.log_path, before[process.name], end)
                share = processes if process is workers else 1
                written = (end - before[process.name]) / share
                results.append(Measured(kind, round(outage, 1), round(window, 1),
                                        "worker process" if process is workers else "scheduler",
                                        round(written), round(written / (window / 60)),
                                        text.count("Traceback (most recent call last)"), text.count("\n")))
            (log_dir / f"after-{kind}").write_text("")
            time.sleep(10)
    finally:
        scheduler.stop()
        workers.stop()
        sandbox.stop()
        tm_sandbox.stop()
        chaos_servers.services(args.block, "stop")
    print(f"logs in {log_dir}")
    print(f"{'outage':<10} {'seconds':>7} {'process':<15} {'bytes':>9} {'bytes/min':>10} {'tracebacks':>10} {'lines':>6}")
    for m in results:
        print(f"{m.kind:<10} {m.outage_seconds:>7.0f} {m.process:<15} {m.bytes:>9,} {m.per_minute:>10,.0f} "
              f"{m.tracebacks:>10} {m.lines:>6}")
    ok = all(m.per_minute <= LIMIT_PER_MINUTE and m.tracebacks == 0 for m in results)
    print(f"goal <= {LIMIT_PER_MINUTE:,} bytes per process per minute, no traceback: {'met' if ok else 'NOT MET'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"ok": ok, "log_dir": str(log_dir), "results": [asdict(m) for m in results]}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
