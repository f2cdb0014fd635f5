"""Per-test-run isolation on the shared local servers: a fresh database and a fresh vhost.

The servers themselves are started by `scripts/services.sh start` (make test does it);
each test run gets its own database and RabbitMQ vhost, so tests can run beside a
demo on the same servers without touching its data.
"""

from __future__ import annotations

import random
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import psycopg

REPO = Path(__file__).resolve().parents[2]


def _service_url(name: str) -> str:
    """The URL `scripts/services.sh env` gives: the ports of the servers actually running (or the
    configured ones).  Read at call time: the chaos run points the process at its private pair."""
    result = subprocess.run(["bash", str(REPO / "scripts" / "services.sh"), "env"], capture_output=True, text=True,
                            timeout=30)
    for line in result.stdout.splitlines():
        if line.startswith(f"export {name}="):
            return line.split("=", 1)[1].strip("'\"")
    raise ServersNotRunning(f"scripts/services.sh env printed no {name}: {result.stderr.strip()}")


def pg_port() -> int:
    return int(urlsplit(_service_url("DATABASE_URL")).port or 5432)


def amqp_port() -> int:
    return int(urlsplit(_service_url("BROKER_URL")).port or 5672)


def pg_admin_dsn() -> str:
    return f"postgresql://fulfil:fulfil@127.0.0.1:{pg_port()}/fulfil"


class ServersNotRunning(RuntimeError):
    pass


def require_servers() -> None:
    for name, port in (("Postgres", pg_port()), ("RabbitMQ", amqp_port())):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            raise ServersNotRunning(
                f"{name} is not listening on 127.0.0.1:{port}. Start the local servers with "
                "`scripts/services.sh start` (`make test` does this for you)."
            ) from None


@dataclass(frozen=True)
class TestDatabase:
    name: str
    port: int = field(default_factory=pg_port)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://fulfil:fulfil@127.0.0.1:{self.port}/{self.name}"

    @property
    def dsn(self) -> str:
        return f"postgresql://fulfil:fulfil@127.0.0.1:{self.port}/{self.name}"


def create_database(prefix: str = "fulfil_test") -> TestDatabase:
    database = TestDatabase(f"{prefix}_{uuid.uuid4().hex[:10]}")
    with psycopg.connect(pg_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database.name}"')
    return database


def drop_database(database: TestDatabase) -> None:
    with psycopg.connect(pg_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')


def migrate(database: TestDatabase) -> None:
    """The way `fulfil migrate` does it: the packaged migrations, no alembic.ini (tests/integration/
    test_migrations.py covers the repository's alembic.ini too)."""
    from fulfilment.migrate import upgrade

    upgrade(database.url)


@contextmanager
def migrated_database(prefix: str = "fulfil_test") -> Iterator[TestDatabase]:
    """A fresh, migrated database, dropped (its pooled connections closed first) on the way out."""
    database = create_database(prefix)
    try:
        migrate(database)
        yield database
    finally:
        from fulfilment.db import engine_for

        engine_for(database.url).dispose()
        drop_database(database)


def rabbitmqctl(*args: str) -> str:
    result = subprocess.run(
        [str(REPO / "scripts" / "services.sh"), "rabbitmqctl", *args],
        capture_output=True, text=True, timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr or result.stdout}")
    return result.stdout


@dataclass(frozen=True)
class TestVhost:
    name: str
    port: int = field(default_factory=amqp_port)

    @property
    def url(self) -> str:
        return f"amqp://fulfil:fulfil@127.0.0.1:{self.port}/{quote(self.name, safe='')}"


def create_vhost(prefix: str = "fulfil_test") -> TestVhost:
    vhost = TestVhost(f"{prefix}_{uuid.uuid4().hex[:10]}")
    rabbitmqctl("add_vhost", vhost.name)
    rabbitmqctl("set_permissions", "-p", vhost.name, "fulfil", ".*", ".*", ".*")
    return vhost


def delete_vhost(vhost: TestVhost) -> None:
    rabbitmqctl("delete_vhost", vhost.name)


# Ports for the servers a test starts come from below the kernel's ephemeral range
# (net.ipv4.ip_local_port_range, 32768-60999 by default).  A port the kernel hands out with
# bind(0) is an ephemeral one: between our pick and the server's own bind, any outbound
# connection (a Postgres or AMQP client) may take it as its local port, and the server then
# dies with EADDRINUSE.  No outbound connection is ever given a port from this range.  The
# fixed port blocks of the dev servers, chaos runs, helpers and the HA stack (22xxx-32xxx)
# stay clear of it too.
LISTEN_PORTS = range(12000, 20000)
_handed_out: set[int] = set()


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nothing listens on, never handed out before by this process, and outside
    the ephemeral range (so no client connection can take it before the server binds it)."""
    floor = _ephemeral_floor()
    candidates = [port for port in LISTEN_PORTS if port < floor and port not in _handed_out]
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {LISTEN_PORTS.start}-{LISTEN_PORTS.stop - 1} below {floor}")
