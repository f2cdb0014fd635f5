"""A smaller chaos run inside `make test` (the full one is `make chaos`, 1,000 purchases).

Kills, a RabbitMQ restart, a Postgres restart and partner faults, on a private pair of
servers; then every money invariant is checked from the sandbox's records and the database.
"""

from __future__ import annotations

from pathlib import Path

from tests.chaos.run import ChaosConfig, run, table


def test_chaos_run_keeps_every_invariant(tmp_path: Path) -> None:
    # Port block 24: its own private servers, so `make chaos` (block 22) can run beside `make test`.
    result = run(ChaosConfig(purchases=100, timeout=300, settle=240, seed=7, kill_every=(4.0, 9.0), port_block=24),
                 tmp_path)
    print(table(result))
    verdict = result.verdict
    assert result.kills > 0 and result.restarts == ["rabbitmq", "postgres"]
    assert result.faults_injected.get("error", 0) >= 0.2 * result.partner_requests
    assert result.faults_injected.get("rate_limited", 0) > 0
    assert result.faults_injected.get("drop_after_commit", 0) > 0
    assert verdict["duplicates"] == 0 and verdict["orphan_orders"] == 0
    assert verdict["orders_on_expired_quote"] == 0
    assert verdict["lost"] == 0 and verdict["held_without_reason"] == 0
    assert verdict["transitions_without_one_event"] == 0 and verdict["events_never_received"] == 0
    assert verdict["secret_leaks"] == []
    assert result.ok, table(result)
