"""(h) The pipeline on the HA stack (scripts/ha.sh): quorum queues on a 3-node RabbitMQ cluster,
Postgres with a synchronous standby (Patroni), next to the single-node figures of the same run.

`target` gives `pipeline.running_pipeline` a fresh database on the Patroni primary (named by the
multi-host URL) and a fresh vhost on the cluster, and the workers' settings for it
(BROKER_QUEUE_TYPE=quorum, SYNC_STANDBY_POLICY=require).  The stack must be up (`make ha-up`).
The servers' cost counters (pg_stat_statements, RabbitMQ's per-queue counts) are read from the
local servers only, so the HA runs report no per-purchase costs.

`python -m bench --parts b,f,h` runs (h) `--repeats` times, each right after that repeat's (b), then
its open-loop latency `--repeats` times after (f); `ratios` reports medians over the repeats and
the ratios of this run.
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from bench import stats
from tests.support.servers import REPO

HA = REPO / "scripts" / "ha.sh"


def ha(*args: str) -> str:
    result = subprocess.run(["bash", str(HA), *args], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/ha.sh {' '.join(args)} failed (is the HA stack up? make ha-up): "
                           f"{result.stderr or result.stdout}")
    return result.stdout


def stack_env() -> dict[str, str]:
    env = {}
    for line in ha("env").splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    return env


@dataclass(frozen=True)
class HaDatabase:
    name: str
    hosts: str  # "127.0.0.1:31431,127.0.0.1:31432"

    @property
    def dsn(self) -> str:
        return f"postgresql://fulfil:fulfil@{self.hosts}/{self.name}?target_session_attrs=read-write"

    @property
    def url(self) -> str:
        return self.dsn.replace("postgresql://", "postgresql+psycopg://", 1)


@dataclass(frozen=True)
class HaVhost:
    name: str
    nodes: tuple[str, ...]  # "127.0.0.1:31671", ...

    @property
    def url(self) -> str:
        return ";".join(f"amqp://fulfil:fulfil@{node}/{self.name}" for node in self.nodes)


def target(stack: contextlib.ExitStack, name: str) -> tuple[HaDatabase, HaVhost, dict[str, str]]:
    from fulfilment.migrate import upgrade
    from fulfilment.settings import multihost_to_query

    env = stack_env()
    hosts = env["DATABASE_URL"].split("@", 1)[1].split("/", 1)[0]
    database = HaDatabase(f"fulfil_bench_ha_{name}_{uuid.uuid4().hex[:8]}", hosts)
    admin = f"postgresql://fulfil:fulfil@{hosts}/fulfil?target_session_attrs=read-write"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database.name}"')

    def drop() -> None:
        from fulfilment.db import engine_for

        engine_for(multihost_to_query(database.url)).dispose()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')

    stack.callback(drop)
    upgrade(multihost_to_query(database.url))
    nodes = tuple(url.split("@", 1)[1].split("/", 1)[0] for url in env["BROKER_URL"].split(";"))
    vhost = HaVhost(f"fulfil_bench_ha_{name}_{uuid.uuid4().hex[:8]}", nodes)
    ha("rabbitmqctl", "1", "-q", "add_vhost", vhost.name)
    stack.callback(ha, "rabbitmqctl", "1", "-q", "delete_vhost", vhost.name)
    ha("rabbitmqctl", "1", "-q", "set_permissions", "-p", vhost.name, "fulfil", ".*", ".*", ".*")
    return database, vhost, {"BROKER_QUEUE_TYPE": "quorum", "SYNC_STANDBY_POLICY": "require"}


def ratios(single: dict[str, Any], on_ha: dict[str, Any]) -> dict[str, Any]:
    """HA / single node, from this run (DEVELOPERS: ratios from one run, medians over repeats).

    Purchases/s: the median of (h)'s repeats over the median of (b)'s, and the ratio repeat by
    repeat (run i of (b) and run i of (h), minutes apart: a shared machine's neighbours weigh on
    both alike), its median and range.  Open-loop p99: the median of (h)'s latency repeats over
    (f)'s p99 at the same fraction of each maximum ((f) runs once).
    """
    def p99(latency: dict[str, Any] | None) -> float | None:
        levels = (latency or {}).get("levels") or []
        return levels[0]["latency_from_submit"]["p99_ms"] / 1000 if levels else None

    throughput = single.get("throughput") or {}
    single_rate = (throughput.get("pipeline_per_s") or {}).get("median")
    single_runs = (throughput.get("runs") or {}).get("pipeline") or []
    ha_runs = on_ha.get("runs") or []
    ha_rate = stats.spread([r["per_s"] for r in ha_runs]) if ha_runs else None
    by_repeat = [h["per_s"] / b["per_s"] for b, h in zip(single_runs, ha_runs, strict=False) if b.get("per_s")]
    single_p99 = p99(single.get("latency"))
    ha_p99s = [p for p in (p99(latency) for latency in on_ha.get("latency_runs") or []) if p is not None]
    ha_p99 = stats.spread(ha_p99s) if ha_p99s else None
    return {
        "single_per_s": single_rate, "ha_per_s": ha_rate,
        "throughput_ratio": stats.ratio(ha_rate["median"], single_rate) if ha_rate and single_rate else None,
        "throughput_ratio_by_repeat": stats.spread(by_repeat) if by_repeat else None,
        "single_p99_s": single_p99, "ha_p99_s": ha_p99,
        "p99_ratio": stats.ratio(ha_p99["median"], single_p99) if ha_p99 and single_p99 else None,
    }


def render(found: dict[str, Any]) -> str:
    r = found.get("ratios") or {}

    def num(value: Any, fmt: str) -> str:
        return format(value, fmt) if isinstance(value, (int, float)) else "-"

    def spread(value: Any, fmt: str, unit: str = "") -> str:
        if not isinstance(value, dict):
            return "-"
        return (f"{num(value['median'], fmt)}{unit} (median of {value['n']}, "
                f"{num(value['min'], fmt)}-{num(value['max'], fmt)})")

    return "\n".join([
        "(h) HA stack (quorum queues on 3 RabbitMQ nodes, Postgres with a synchronous standby) vs single node:",
        f"    purchases/s   single {num(r.get('single_per_s'), '.1f')} (median of (b))   "
        f"HA {spread(r.get('ha_per_s'), '.1f')}",
        f"                HA/single {num(r.get('throughput_ratio'), '.2f')} (of the medians); "
        f"repeat by repeat {spread(r.get('throughput_ratio_by_repeat'), '.2f')}",
        f"    open-loop p99 single {num(r.get('single_p99_s'), '.3f')} s ((f), one run)   "
        f"HA {spread(r.get('ha_p99_s'), '.3f', ' s')}   HA/single {num(r.get('p99_ratio'), '.2f')}",
    ])
