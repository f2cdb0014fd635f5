"""Reading /proc: a process tree, its resident memory (VmRSS) and CPU time, and machine CPU use."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _status(pid: int) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces; everything after its closing paren is plain.
    return raw[raw.rindex(")") + 2:].split()


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return sorted(set(found))


def tree(pid: int) -> list[int]:
    """pid and all its descendants (those alive now)."""
    pids, pending = [], [pid]
    while pending:
        current = pending.pop()
        try:
            kids = children(current)
        except OSError:
            continue  # gone meanwhile
        pids.append(current)
        pending.extend(kids)
    return sorted(pids)


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    role: str
    threads: int
    rss_kib: int

    @property
    def rss_mib(self) -> float:
        return self.rss_kib / 1024


def rss_kib(pid: int) -> int:
    value = _status(pid).get("VmRSS", "0 kB")
    return int(value.split()[0])


def dramatiq_memory(main_pid: int) -> list[ProcessMemory]:
    """RSS of a `dramatiq` command's processes: the main process, its worker processes (many
    threads: consumers and worker threads) and fork processes (e.g. the Prometheus exposition
    server, one thread)."""
    found: list[ProcessMemory] = []
    for pid in tree(main_pid):
        try:
            status = _status(pid)
        except OSError:
            continue
        threads = int(status.get("Threads", "1"))
        if pid == main_pid:
            role = "main"
        else:
            role = "worker" if threads > 2 else "fork"
        found.append(ProcessMemory(pid, role, threads, int(status.get("VmRSS", "0 kB").split()[0])))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time consumed so far by these processes (alive ones)."""
    total = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / CLOCK_TICKS


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in first]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already included in user/nice
    return total - idle, total


class CpuWindow:
    """Machine-wide CPU busy fraction, and CPU seconds per group of processes, over a window."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._busy0, self._total0 = machine_cpu_ticks()
        self._cpu0 = {name: cpu_seconds(pids) for name, pids in groups.items()}

    def finish(self) -> dict[str, object]:
        busy, total = machine_cpu_ticks()
        return {
            "machine_cpu_busy": round((busy - self._busy0) / max(total - self._total0, 1), 3),
            "cpu_seconds": {name: round(cpu_seconds(pids) - self._cpu0[name], 2) for name, pids in self.groups.items()},
        }
