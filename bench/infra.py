"""Fresh databases, vhosts and processes for one benchmark part, always cleaned up.

Everything is registered on a `contextlib.ExitStack`, so a failure or Ctrl-C in the
middle of a part still stops its processes, drops its database and deletes its vhost.
The isolation helpers come from the test support code (tests/support/servers.py).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import psycopg

from tests.support import servers
from tests.support.processes import ManagedProcess, consumers
from tests.support.sandbox import PARTNER_A, Sandbox

# Production timings (.env.example defaults) except where the benchmark needs otherwise:
# transfer checks pushed out of the measured window (the sandbox never completes a
# transfer here), so (b) and (e) measure intake -> quote -> order only.
PIPELINE_SETTINGS = {
    "TRANSFER_POLL_SECONDS": "3600",
    "TRANSFER_POLL_MIN_SECONDS": "3600",
    "LOG_LEVEL": "INFO",
}
# Zero latency, no faults, inventory that never runs out, no simulated transfers.
SANDBOX_ENV = {
    "SANDBOX_SEATS_PER_ROW": "1000000",
    "SANDBOX_TRANSFER_AFTER_SECONDS": "none",
    "SANDBOX_SEED": "7",
}


class BenchError(RuntimeError):
    """A part could not be measured (timeout, a process died, unexpected purchase states)."""


def fresh_database(stack: contextlib.ExitStack, prefix: str, *, migrated: bool = True) -> servers.TestDatabase:
    database = servers.create_database(prefix)
    stack.callback(_drop_database, database)
    if migrated:
        servers.migrate(database)
    return database


def _drop_database(database: servers.TestDatabase) -> None:
    from fulfilment.db import engine_for

    engine_for(database.url).dispose()
    servers.drop_database(database)


def fresh_vhost(stack: contextlib.ExitStack, prefix: str) -> servers.TestVhost:
    vhost = servers.create_vhost(prefix)
    stack.callback(servers.delete_vhost, vhost)
    return vhost


def start_sandbox(stack: contextlib.ExitStack, log_dir: Path) -> Sandbox:
    sandbox = Sandbox(env=SANDBOX_ENV, log_path=log_dir / "sandbox.log")
    stack.callback(sandbox.stop)
    sandbox.start()
    sandbox.clear_faults()
    return sandbox


def stop_on_exit(stack: contextlib.ExitStack, process: ManagedProcess) -> ManagedProcess:
    stack.callback(process.stop)
    return process


class DatabaseLike(Protocol):
    """A run's database: the local test server's (servers.TestDatabase) or the HA stack's (bench/ha.py)."""

    @property
    def name(self) -> str: ...

    @property
    def url(self) -> str: ...

    @property
    def dsn(self) -> str: ...


class VhostLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def url(self) -> str: ...


def app_env(database: DatabaseLike, vhost: VhostLike, sandbox_url: str, log_dir: Path,
            settings: dict[str, str]) -> dict[str, str]:
    """The environment of a worker / the scheduler, built as tests/conftest.py builds `app_env`."""
    client_id, secret = PARTNER_A
    metrics_dir = log_dir / "prometheus"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "BROKER_", "TBB_"))},
        **settings,
        "DATABASE_URL": database.url,
        "BROKER_URL": vhost.url,
        "TBB_BASE_URL": sandbox_url,
        "TBB_CLIENT_ID": client_id,
        "TBB_CLIENT_SECRET": secret,
        "METRICS_PORT": str(servers.free_port()),
        "METRICS_HOST": "127.0.0.1",
        "dramatiq_prom_host": "127.0.0.1",
        "dramatiq_prom_port": str(servers.free_port()),
        "dramatiq_prom_db": str(metrics_dir),
    }


def wait_for_consumers(broker_url: str, queues: tuple[str, ...], process: ManagedProcess, expected: int,
                       timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise BenchError(f"{process.name} exited early (log {process.log_path}):\n{process.log_tail()}")
        if all(consumers(broker_url, q) >= expected for q in queues):
            return
        time.sleep(0.2)
    raise BenchError(f"{process.name} not consuming {queues} after {timeout}s (log {process.log_path})")


# Things that went wrong but were recovered from (shown in the report, kept in the JSON).
NOTES: list[str] = []


def start_consuming(stack: contextlib.ExitStack, start: Callable[[str], ManagedProcess], broker_url: str,
                    queues: tuple[str, ...], expected: int, timeout: float = 60) -> ManagedProcess:
    """Start a `dramatiq` command and wait until it consumes every queue; once more if it does not.

    Seen once on this machine: the worker processes said "ready for action" but never
    connected to RabbitMQ.  The hung processes are killed, the retry is noted in the report.
    """
    for attempt in (1, 2):
        process = stop_on_exit(stack, start("" if attempt == 1 else "-again"))
        try:
            wait_for_consumers(broker_url, queues, process, expected, timeout)
            return process
        except BenchError as error:
            if attempt == 2:
                raise
            NOTES.append(f"{process.name} did not start consuming ({error}); killed and started again")
            process.kill()
    raise AssertionError("unreachable")


def poll_until_done(count: Callable[[], int], total: int, *, what: str, timeout: float, stall_timeout: float,
                    alive: Callable[[], None] | None = None, interval: float = 0.2) -> None:
    """Poll `count()` until it reaches `total`.

    Fails with BenchError after `timeout` seconds overall, or after `stall_timeout`
    seconds without progress; `alive()` may raise if a process it watches died.
    """
    started = last_progress = time.monotonic()
    last = -1
    while True:
        done = count()
        now = time.monotonic()
        if done >= total:
            return
        if done != last:
            last, last_progress = done, now
        if alive is not None:
            alive()
        if now - started > timeout:
            raise BenchError(f"{what}: only {done}/{total} done after {timeout:.0f}s (overall time limit)")
        if now - last_progress > stall_timeout:
            raise BenchError(f"{what}: stuck at {done}/{total} for {stall_timeout:.0f}s")
        time.sleep(interval)


def alive_check(*processes: ManagedProcess) -> Callable[[], None]:
    def check() -> None:
        for process in processes:
            if not process.alive():
                raise BenchError(f"{process.name} died (log {process.log_path}):\n{process.log_tail()}")
    return check


def db_now(conn: psycopg.Connection) -> float:
    """The database clock, as epoch seconds (all durations are measured on this clock)."""
    row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    assert row is not None
    return float(row[0])
