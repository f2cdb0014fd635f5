"""Invariant 9: a submission RabbitMQ accepted ends as a purchase, however long Postgres is down.

Real processes throughout: a private Postgres of this module's own (the shared one must
never stop: other tests use it), started with pg_ctl in a temporary directory on a free
port, that the test stops and starts; real `dramatiq workers` and scheduler; requests
submitted with the real `fulfil submit` CLI while the database is down.

With ACTOR_MAX_RETRIES=2 and a backoff of 100-500 ms, the whole retry budget of a message
is 2 retries, under 1 s of backoff in all (at most 200 + 400 ms).  The outage lasts
OUTAGE_SECONDS (15 s): more than ten times that budget, so under a count limit every
request would have been dead-lettered many times over (issue 7: all three ended in
purchases.intake.XQ with retries=8 and no purchase row).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from dramatiq.common import xq_name

from fulfilment.rabbitmq.queues import INTAKE_QUEUE, queue_depths
from tests.support import servers
from tests.support.processes import ManagedProcess, start_scheduler, start_workers, wait_for_consumers
from tests.support.sandbox import Sandbox
from tests.support.servers import REPO, free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OUTAGE_SECONDS = 15.0
MAX_RETRIES = 2
PROGRESSED = ("quoted", "ordering", "awaiting_transfer", "transfer_complete")


class PrivatePostgres:
    """One Postgres 15 cluster in a temporary directory, run as `postgres` when we are root
    (as scripts/services.sh does): initdb, start, stop, throw away."""

    def __init__(self, log_dir: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fulfil-pg-outage-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"  # copied to log_dir at the end (the service user may not write there)
        self.log_copy = log_dir / "outage-postgres.log"
        self.port = free_port()  # below the ephemeral range: no client socket holds it at restart
        self.password = "pw-" + uuid.uuid4().hex  # distinctive: it must never show in a log or an output
        self.user = "postgres" if os.getuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
        if os.getuid() == 0:
            shutil.chown(self.dir, self.user, self.user)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://outage:{self.password}@127.0.0.1:{self.port}/outage"

    def _run(self, *argv: str) -> None:
        prefix = ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--init-groups", "--"] \
            if os.getuid() == 0 else []
        done = subprocess.run([*prefix, *argv], cwd=self.dir, capture_output=True, text=True, timeout=90)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")

    def init(self) -> PrivatePostgres:
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--no-locale",
                  "--auth-local=trust", "--auth-host=scram-sha-256")
        self.start()
        with psycopg.connect(host=str(self.dir), port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE ROLE outage LOGIN PASSWORD '{self.password}'")
            conn.execute("CREATE DATABASE outage OWNER outage")
        return self

    def start(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                  "-c synchronous_commit=off -c full_page_writes=off", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: disconnect every client and shut down, as a restart or failover does."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass  # already stopped
        if self.log.exists():
            shutil.copyfile(self.log, self.log_copy)
        shutil.rmtree(self.dir, ignore_errors=True)

    def migrate(self) -> None:
        from alembic import command
        from alembic.config import Config

        config = Config(str(REPO / "alembic.ini"))
        config.set_main_option("script_location", str(REPO / "migrations"))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        config.attributes["configure_logging"] = False
        command.upgrade(config, "head")

    def query(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        dsn = f"postgresql://outage:{self.password}@127.0.0.1:{self.port}/outage"
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            return list(conn.execute(sql, params).fetchall())


@pytest.fixture(scope="module")
def private_postgres(log_dir: Path) -> Iterator[PrivatePostgres]:
    if not (PG_BIN / "pg_ctl").exists():
        pytest.fail(f"Postgres 15 binaries not found in {PG_BIN} (scripts/bootstrap.sh installs them)", pytrace=False)
    server = PrivatePostgres(log_dir).init()
    try:
        server.migrate()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def outage_env(app_env: dict[str, str], private_postgres: PrivatePostgres, log_dir: Path) -> Iterator[dict[str, str]]:
    # A vhost of its own: no other module's queued or dead messages, and nothing left for them.
    vhost = servers.create_vhost("fulfil_outage")
    metrics_dir = log_dir / "prometheus-outage"
    metrics_dir.mkdir(exist_ok=True)
    try:
        yield {
            **app_env,
            "DATABASE_URL": private_postgres.url,
            "BROKER_URL": vhost.url,
            "ACTOR_MAX_RETRIES": str(MAX_RETRIES),
            "ACTOR_MIN_BACKOFF_MS": "100",
            "ACTOR_MAX_BACKOFF_MS": "500",
            "METRICS_PORT": str(free_port()),
            "dramatiq_prom_port": str(free_port()),
            "dramatiq_prom_db": str(metrics_dir),
        }
    finally:
        servers.delete_vhost(vhost)


def fulfil(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fulfilment.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def log_lines(process: ManagedProcess) -> list[dict[str, object]]:
    lines = []
    for line in process.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def outage_lines(workers: ManagedProcess) -> list[dict[str, object]]:
    """The workers' lines about the database outage (fulfilment/outages.py): down, summaries, back."""
    return [line for line in log_lines(workers) if line.get("logger") == "fulfilment.outage"
            and str(line.get("message", "")).startswith("database (Postgres)")]


def metric(port: str, name: str) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.TransportError:
        return None
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else None


def wait_for(predicate, timeout: float, what: str, detail=lambda: "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail()}")


def test_requests_submitted_while_postgres_is_down_become_purchases_when_it_is_back(
    private_postgres: PrivatePostgres, outage_env: dict[str, str], sandbox: Sandbox, log_dir: Path
) -> None:
    sandbox.clear_faults()
    env = outage_env
    workers = start_workers(env, log_dir, processes=2, threads=4, name="outage-workers")
    scheduler = start_scheduler(env, log_dir, name="outage-scheduler")
    try:
        wait_for_consumers(env["BROKER_URL"], workers, expected=2)
        private_postgres.stop()
        outage_started = time.monotonic()

        # Three submissions with the real CLI, each confirmed by RabbitMQ (exit 0, purchase id printed).
        request_ids = [f"outage-{i}-{uuid.uuid4()}" for i in range(3)]
        deadline = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3 * 86400))
        purchase_ids = []
        for request_id in request_ids:
            submitted = fulfil(env, "submit", "--request-id", request_id, "--event-id", "5496123",
                               "--section-name", "101", "--quantity", "2", "--delivery-deadline", deadline)
            assert submitted.returncode == 0, submitted.stderr
            purchase_ids.append(str(uuid.UUID(submitted.stdout.strip())))

        health = fulfil(env, "health")
        assert health.returncode == 3
        [database_line] = [line for line in health.stdout.splitlines() if line.startswith("database")]
        assert "FAILED" in database_line and "DatabaseDown: down:" in database_line, health.stdout

        # Keep Postgres down far past the retry budget: the requests keep waiting (each wait counted).
        wait_for(lambda: time.monotonic() - outage_started >= OUTAGE_SECONDS
                 and (metric(env["dramatiq_prom_port"], "fulfil_intake_database_waits_total") or 0)
                 >= 3 * (MAX_RETRIES + 2),
                 OUTAGE_SECONDS + 30, "the requests to wait past the retry budget", lambda: f"\n{workers.log_tail()}")
        assert queue_depths(env["BROKER_URL"], (xq_name(INTAKE_QUEUE),)) == {xq_name(INTAKE_QUEUE): 0}
        # Quiet: one line per worker process when the database went down, not one per wait.
        down = [line for line in outage_lines(workers) if " down: " in str(line["message"])]
        assert 1 <= len(down) <= 2, down
        intake_down = [line for line in down if "intake waiting for the database" in str(line["message"])]
        assert intake_down and all(line.get("message_id") and line.get("actor") == "submit_purchase"
                                   and str(line.get("purchase_id")) in purchase_ids for line in intake_down)
        assert all("Connection refused" in str(line["message"]) for line in intake_down)  # the driver's reason
        assert not [line for line in log_lines(workers) if "exception" in line]  # no traceback
        assert metric(env["dramatiq_prom_port"], "fulfil_intake_waiting_for_database") == 1.0

        private_postgres.start()

        def progressed() -> bool:
            rows = private_postgres.query("SELECT id::text, state FROM purchases WHERE id::text = ANY(%s)",
                                          purchase_ids)
            return len(rows) == 3 and all(state in PROGRESSED for _, state in rows)

        wait_for(progressed, 60, "the three purchases to be stored and quoted",
                 lambda: f": {private_postgres.query('SELECT id, state, last_error FROM purchases')}\n"
                         f"{workers.log_tail()}")
        rows = private_postgres.query("SELECT request_id, count(*) FROM purchases GROUP BY request_id")
        assert sorted(rows) == sorted((r, 1) for r in request_ids)
        assert private_postgres.query("SELECT count(*) FROM rejected_requests") == [(0,)]
        assert queue_depths(env["BROKER_URL"], (xq_name(INTAKE_QUEUE),)) == {xq_name(INTAKE_QUEUE): 0}
        wait_for(lambda: metric(env["dramatiq_prom_port"], "fulfil_intake_waiting_for_database") == 0.0, 10,
                 "the waiting gauge to drop back to 0")
        assert fulfil(env, "health").stdout.startswith(f"{'database':<13} ok")
        # One line back per process that saw it down, counting the requests that waited there.
        wait_for(lambda: len([line for line in outage_lines(workers) if " back after " in str(line["message"])])
                 == len(down), 10, "the back lines")
        back = [str(line["message"]) for line in outage_lines(workers) if " back after " in str(line["message"])]
        assert sum(int(text.split("failed attempts, ")[1].split(" purchase")[0]) for text in back) >= 3, back

        shown = fulfil(env, "status", request_ids[0])
        assert shown.returncode == 0 and purchase_ids[0] in shown.stdout

        for process in (workers, scheduler):
            assert private_postgres.password not in process.log_path.read_text(errors="replace")
        assert private_postgres.password not in health.stdout + health.stderr
    finally:
        scheduler.stop()
        workers.stop()
