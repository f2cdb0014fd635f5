"""The HA stack (scripts/ha.sh): a 3-node RabbitMQ cluster with quorum queues and a Patroni pair
with a synchronous standby.  These tests kill its nodes; `make chaos-ha` runs them (FULFIL_HA=1),
bringing the stack up first (`scripts/ha.sh up`, which installs patroni and etcd when missing)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.servers import REPO

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
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ha_stack() -> dict[str, str]:
    """The stack's environment (BROKER_URL naming 3 nodes, DATABASE_URL naming 2, quorum, require)."""
    ha("up", timeout=600)
    env = {}
    for line in ha("env").splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    return env


@pytest.fixture(scope="session")
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
