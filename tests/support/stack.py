"""The whole stack under a real process manager (honcho, supervisord): its own database and vhost,
an environment for its processes, and what a test waits for (consumers, the sandbox, a purchase)."""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from fulfilment.publish import Publisher
from tests.conftest import FAST_SETTINGS
from tests.support import servers
from tests.support.factories import request
from tests.support.processes import WORKER_QUEUES, consumers
from tests.support.sandbox import PARTNER_A

VENV_BIN = Path(sys.executable).parent
# What the test sandbox gets in tests/conftest.py: transfers complete after 2 s.
SANDBOX_ENV = {"SANDBOX_TRANSFER_AFTER_SECONDS": "2", "SANDBOX_SEATS_PER_ROW": "100000", "SANDBOX_SEED": "7"}
_PLAIN = re.compile(r"^[^\s'\"$`\\#]*$")


@dataclass(frozen=True)
class Stack:
    database: servers.TestDatabase
    vhost: servers.TestVhost
    sandbox_port: int
    app_env: dict[str, str]  # what the processes read (the env file's contents)

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    def env_file_text(self) -> str:
        """KEY=value lines, as .env.example: valid for honcho's .env, `sh` (`. file`) and systemd."""
        for key, value in self.app_env.items():
            assert _PLAIN.match(value), f"{key}={value!r} would need quoting in an env file"
        return "".join(f"{key}={value}\n" for key, value in self.app_env.items())


def base_process_env() -> dict[str, str]:
    """A process manager's own environment: no app setting, only what any program needs."""
    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TZ", "USER")}
    return {**keep, "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "PYTHONUNBUFFERED": "1"}


@contextmanager
def fresh_stack(work_dir: Path) -> Iterator[Stack]:
    """A new, unmigrated database and a new vhost; the environment every process of the stack gets."""
    database = servers.create_database("fulfil_stack")
    vhost = servers.create_vhost("fulfil_stack")
    metrics_dir = work_dir / "prometheus"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    client_id, secret = PARTNER_A
    sandbox_port = servers.free_port()
    app_env = {
        **FAST_SETTINGS,
        **SANDBOX_ENV,
        "DATABASE_URL": database.url,
        "BROKER_URL": vhost.url,
        "TBB_BASE_URL": f"http://127.0.0.1:{sandbox_port}",
        "TBB_CLIENT_ID": client_id,
        "TBB_CLIENT_SECRET": secret,
        "METRICS_HOST": "127.0.0.1",
        "METRICS_PORT": str(servers.free_port()),
        "dramatiq_prom_host": "127.0.0.1",
        "dramatiq_prom_port": str(servers.free_port()),
        "dramatiq_prom_db": str(metrics_dir),
    }
    try:
        yield Stack(database, vhost, sandbox_port, app_env)
    finally:
        servers.drop_database(database)
        servers.delete_vhost(vhost)


def wait_for(what: str, check, timeout: float, detail=lambda: "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not after {timeout:.0f} s\n{detail()}")


def sandbox_up(stack: Stack) -> bool:
    try:
        return httpx.get(f"{stack.sandbox_url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def consuming(stack: Stack, expected: int) -> bool:
    return all(consumers(stack.vhost.url, queue) >= expected for queue in WORKER_QUEUES)


def schema_at_head(stack: Stack) -> bool:
    from fulfilment.migrate import current_revision, head_revision

    try:
        return current_revision(stack.database.url) == head_revision()
    except Exception:  # noqa: BLE001  not created yet, or mid-migration
        return False


def purchase_state(stack: Stack, purchase_id: uuid.UUID) -> str | None:
    with psycopg.connect(stack.database.dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT state FROM purchases WHERE id = %s", (purchase_id,)).fetchone()
    return None if row is None else str(row[0])


def complete_a_purchase(stack: Stack, timeout: float = 60, detail=lambda: "") -> uuid.UUID:  # type: ignore[no-untyped-def]
    """Submit one request over AMQP, as another service would, and wait for transfer_complete."""
    with Publisher(stack.vhost.url) as publisher:
        purchase_id = publisher.submit(request())
    seen: list[str | None] = []

    def done() -> bool:
        seen.append(purchase_state(stack, purchase_id))
        return seen[-1] == "transfer_complete"

    wait_for(f"purchase {purchase_id} transfer_complete (last state {seen[-1:]})", done, timeout, detail)
    return purchase_id


def tail(path: Path, lines: int = 40) -> str:
    try:
        return f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"--- {path.name}: (none)"
