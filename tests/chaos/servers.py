"""A private Postgres + RabbitMQ pair for the chaos run, which restarts its servers.

It lives in .local/chaos on its own ports, so restarting it never disturbs the servers
that tests or a demo share.  `scripts/services.sh` does the work.
"""

from __future__ import annotations

import os
import subprocess

from tests.support.servers import REPO

# Below Linux's ephemeral range (32768-60999): a client socket can never hold these ports
# when a server restarts and binds them again.
CHAOS_ENV = {
    "FULFIL_LOCAL_DIR": str(REPO / ".local" / "chaos"),
    "FULFIL_PG_PORT": "22432",
    "FULFIL_AMQP_PORT": "22672",
    "FULFIL_RABBIT_DIST_PORT": "22673",
    "FULFIL_EPMD_PORT": "22369",
}


def services(*args: str, timeout: float = 180) -> str:
    result = subprocess.run(["bash", str(REPO / "scripts" / "services.sh"), *args], env={**os.environ, **CHAOS_ENV},
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"services.sh {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def use_private_servers() -> None:
    """Point this process (and the tests.support helpers it imports later) at the private pair."""
    os.environ.update(CHAOS_ENV)
