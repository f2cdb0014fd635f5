"""Is an order intent durable beyond the primary?  (design invariant 11)

The order intent is committed before the partner call (invariant 1).  If the primary dies and
a standby that never received that commit is promoted, the new primary still says `quoted` and a
worker orders again: two orders.  Only a standby that confirms each commit before the primary
answers it (synchronous replication: `synchronous_standby_names` names it, `synchronous_commit`
is `on`, `remote_write` or `remote_apply`, and it is streaming as `sync` or `quorum`) makes the
intent survive a failover.  Patroni's `synchronous_mode: true` sets this up and never promotes a
standby that was not synchronous.

`replication_state` reads it from the primary (pg_stat_replication: the database role needs
`pg_monitor` to see its columns); SYNC_STANDBY_POLICY decides what the workers do about it
(`check_durability_at_start`) and `fulfil health` reports it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from fulfilment.settings import DatabaseSettings

log = logging.getLogger("fulfilment.replication")

DURABLE_COMMITS = ("on", "remote_write", "remote_apply")


class DurabilityRefused(RuntimeError):
    """SYNC_STANDBY_POLICY=require and the primary does not replicate synchronously."""


@dataclass(frozen=True)
class Standby:
    name: str
    state: str | None  # streaming, catchup, ... (None: the role cannot see it)
    sync_state: str | None  # sync, quorum, potential, async
    replay_lag_seconds: float | None


@dataclass(frozen=True)
class ReplicationState:
    in_recovery: bool  # connected to a standby (target_session_attrs missing?)
    synchronous_commit: str
    synchronous_standby_names: str
    standbys: tuple[Standby, ...]

    @property
    def synchronous_standbys(self) -> tuple[Standby, ...]:
        return tuple(s for s in self.standbys if s.state == "streaming" and s.sync_state in ("sync", "quorum"))

    @property
    def durable(self) -> bool:
        """A commit on this server is on a synchronous standby before it is answered."""
        return (not self.in_recovery and self.synchronous_commit in DURABLE_COMMITS
                and bool(self.synchronous_standby_names.strip()) and bool(self.synchronous_standbys))

    @property
    def max_replay_lag_seconds(self) -> float | None:
        lags = [s.replay_lag_seconds for s in self.standbys if s.replay_lag_seconds is not None]
        return max(lags) if lags else None

    def describe(self) -> str:
        role = "standby (read-only)" if self.in_recovery else "primary"
        standbys = ", ".join(f"{s.name} {s.state or '?'}/{s.sync_state or '?'}"
                             + (f" lag {s.replay_lag_seconds:.1f}s" if s.replay_lag_seconds is not None else "")
                             for s in self.standbys) or "none"
        verdict = ("order intents are on a synchronous standby before they are answered" if self.durable
                   else "order intents are on this server alone until replicated: a failover may lose them")
        return (f"{role}, synchronous_commit={self.synchronous_commit}, "
                f"synchronous_standby_names={self.synchronous_standby_names or '(empty)'}, "
                f"standbys: {standbys}; {verdict}")


def replication_state(connection: Connection) -> ReplicationState:
    row = connection.execute(text(
        "SELECT pg_is_in_recovery(), current_setting('synchronous_commit'), "
        "current_setting('synchronous_standby_names')")).one()
    standbys = connection.execute(text(
        "SELECT application_name, state, sync_state, EXTRACT(EPOCH FROM replay_lag) "
        "FROM pg_stat_replication ORDER BY application_name")).all()
    return ReplicationState(
        in_recovery=bool(row[0]), synchronous_commit=str(row[1]), synchronous_standby_names=str(row[2]),
        standbys=tuple(Standby(str(name), state, sync, float(lag) if lag is not None else None)
                       for name, state, sync, lag in standbys))


def read_state(settings: DatabaseSettings) -> ReplicationState:
    """One short-lived connection (its own engine: `fulfil health` and a worker's start)."""
    from sqlalchemy import create_engine

    engine = create_engine(settings.database_url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            return replication_state(connection)
    finally:
        engine.dispose()


def judge(state: ReplicationState, policy: str) -> str:
    """The line to report; raises DurabilityRefused when the policy requires what is missing."""
    line = state.describe()
    if not state.durable and policy == "require":
        raise DurabilityRefused(f"SYNC_STANDBY_POLICY=require and the database is not synchronously replicated: {line}")
    return line


def check_durability_at_start(settings: DatabaseSettings) -> None:
    """A worker's start: one line if the intents are not durable (warn), a refusal (require)."""
    if settings.sync_standby_policy == "ignore":
        return
    from fulfilment.dependencies import describe_database_error, is_database_unavailable

    try:
        state = read_state(settings)
    except Exception as error:
        if not is_database_unavailable(error):
            raise
        log.warning("database unreachable at start, replication not checked: %s", describe_database_error(error))
        return
    line = judge(state, settings.sync_standby_policy)
    if state.durable:
        log.info("replication: %s", line)
    else:
        log.warning("replication: %s (SYNC_STANDBY_POLICY=%s)", line, settings.sync_standby_policy)


def as_metrics(state: ReplicationState) -> dict[str, Any]:
    """The gauges `fulfil health --json` and the metrics show."""
    return {"primary": not state.in_recovery, "synchronous_standbys": len(state.synchronous_standbys),
            "standbys": len(state.standbys), "replay_lag_seconds": state.max_replay_lag_seconds,
            "durable": state.durable}
