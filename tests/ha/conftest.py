"""The HA stack (scripts/ha.sh): a 3-node RabbitMQ cluster with quorum queues and a Patroni pair
with a synchronous standby.  These tests kill its nodes; `make chaos-ha` runs them (FULFIL_HA=1),
bringing the stack up first (`scripts/ha.sh up`, which installs patroni and etcd when missing).

Tests marked `short_ha` also run in `make test` (without FULFIL_HA): their module then brings the
stack up itself and stops it at its end (`scripts/ha.sh down`: not left running through the rest of
the suite), unless it was running already.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import FAST_SETTINGS, TM_TEST_SETTINGS, environment
from tests.support.sandbox import PARTNER_A, Sandbox
from tests.support.servers import REPO
from tests.support.tm_sandbox import TMSandboxProcess

HA = REPO / "scripts" / "ha.sh"


def ha(*args: str, timeout: float = 300) -> str:
    result = subprocess.run(["bash", str(HA), *args], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"ha.sh {' '.join(args)} failed: {result.stderr or result.stdout}")
    return result.stdout


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("FULFIL_HA") == "1":
        return
    skip = pytest.mark.skip(reason="kills nodes of the HA stack: `make chaos-ha` runs it (FULFIL_HA=1)")
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent and not item.get_closest_marker("short_ha"):
            item.add_marker(skip)


def _running() -> bool:
    return subprocess.run(["bash", str(HA), "status"], capture_output=True, timeout=120).returncode == 0


@pytest.fixture(scope="module")
def ha_stack() -> Iterator[dict[str, str]]:
    """The stack's environment (BROKER_URL naming 3 nodes, DATABASE_URL naming 2, quorum, require)."""
    started_here = os.environ.get("FULFIL_HA") != "1" and not _running()
    ha("up", timeout=600)
    env = {}
    for line in ha("env").splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    try:
        yield env
    finally:
        if started_here:  # `make test`: leave nothing running
            ha("down", timeout=300)


@pytest.fixture(scope="module")
def ha_database(ha_stack: dict[str, str]) -> Iterator[str]:
    """A database of its own on the Patroni primary, migrated."""
    from fulfilment.migrate import upgrade
    from fulfilment.settings import multihost_to_query

    name = f"fulfil_ha_{uuid.uuid4().hex[:8]}"
    admin = ha_stack["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = multihost_to_query(ha_stack["DATABASE_URL"].replace("/fulfil?", f"/{name}?"))
    upgrade(url)
    yield url


@pytest.fixture
def ha_env(ha_stack: dict[str, str], ha_database: str, sandbox: Sandbox, tm_sandbox: TMSandboxProcess,
           log_dir: Path) -> Iterator[dict[str, str]]:
    """The pipeline's environment on the HA stack, both partners enabled (their sandboxes)."""
    client_id, secret = PARTNER_A
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "BROKER_", "TBB_", "TM_"))},
        **FAST_SETTINGS, **TM_TEST_SETTINGS, "TM_BASE_URL": f"{tm_sandbox.url}/partners/v1",
        "DATABASE_URL": ha_database, "BROKER_URL": ha_stack["BROKER_URL"],
        "BROKER_QUEUE_TYPE": "quorum", "SYNC_STANDBY_POLICY": "warn",
        "TBB_BASE_URL": sandbox.url, "TBB_CLIENT_ID": client_id, "TBB_CLIENT_SECRET": secret,
        "METRICS_PORT": "0", "dramatiq_prom_host": "127.0.0.1", "dramatiq_prom_port": "31990",
    }
    with environment(env):
        yield env
