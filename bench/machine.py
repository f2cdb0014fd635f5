"""What the numbers were measured on: CPU, cores, RAM, software versions, load."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _postgres_version(dsn: str) -> str:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def _rabbitmq_version() -> str:
    from tests.support.servers import rabbitmqctl

    try:
        return rabbitmqctl("version").strip()
    except Exception as error:  # noqa: BLE001  a version string is not worth failing the run for
        return f"unknown ({error})"


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def describe(pg_dsn: str) -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _mem_total_gib(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "postgres": _postgres_version(pg_dsn),
        "rabbitmq": _rabbitmq_version(),
        "dramatiq": _version("dramatiq"),
        "pika": _version("pika"),
        "sqlalchemy": _version("sqlalchemy"),
        "psycopg": _version("psycopg"),
        "load_average_at_start": load_average(),
    }


def one_line(info: dict[str, Any]) -> str:
    return (f"{info['cpu_model']}, {info['cores']} cores, {info['ram_gib']} GiB RAM; "
            f"Python {info['python']}, PostgreSQL {info['postgres']}, RabbitMQ {info['rabbitmq']}, "
            f"dramatiq {info['dramatiq']}; load average at start {info['load_average_at_start']}")
