"""A private Postgres + RabbitMQ pair for the chaos run, which restarts its servers.

It lives in .local/chaos-<block> on its own ports, so restarting it never disturbs the
servers that tests or a demo share (and `make chaos` can run beside `make test`, whose
smaller chaos run uses another block).  `scripts/services.sh` does the work.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def chaos_env(block: int) -> dict[str, str]:
    """Ports <block>432, <block>672, … : below Linux's ephemeral range (32768-60999), so a
    client socket can never hold one of them when a server restarts and binds it again."""
    return {
        "FULFIL_LOCAL_DIR": str(REPO / ".local" / f"chaos-{block}"),
        "FULFIL_PG_PORT": f"{block}432",
        "FULFIL_AMQP_PORT": f"{block}672",
        "FULFIL_RABBIT_DIST_PORT": f"{block}673",
        "FULFIL_EPMD_PORT": f"{block}369",
    }


def services(block: int, *args: str, timeout: float = 180) -> str:
    result = subprocess.run(["bash", str(REPO / "scripts" / "services.sh"), *args],
                            env={**os.environ, **chaos_env(block)}, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"services.sh {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def use_private_servers(block: int) -> None:
    """Point this process (and the tests.support helpers it calls) at the private pair."""
    os.environ.update(chaos_env(block))
