"""(e) Resident memory (VmRSS) of the dramatiq worker processes, before and after many purchases.

A fresh pipeline (bench/pipeline.py); RSS of every process of the `dramatiq workers`
command is read from /proc/<pid>/status: once the workers are ready, after a warm-up
batch, and after the main batch (plus its peak, sampled while it runs).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bench import procfs, stats
from bench.infra import db_now
from bench.pipeline import RunningPipeline, redriven, running_pipeline


def snapshot(pipe: RunningPipeline) -> dict[str, Any]:
    processes = procfs.dramatiq_memory(pipe.workers.pid)
    workers = [p for p in processes if p.role == "worker"]
    return {
        "processes": [{"pid": p.pid, "role": p.role, "threads": p.threads, "rss_mib": round(p.rss_mib, 1)}
                      for p in processes],
        "workers_rss_mib": round(sum(p.rss_mib for p in workers), 1),
        "all_rss_mib": round(sum(p.rss_mib for p in processes), 1),
        "scheduler_rss_mib": round(procfs.rss_kib(pipe.scheduler.pid) / 1024, 1),
    }


class PeakSampler:
    """Called from the wait loop: checks the processes are alive and samples the workers' RSS."""

    def __init__(self, pipe: RunningPipeline, every: float = 2.0) -> None:
        self.pipe = pipe
        self.every = every
        self.peak_mib = 0.0
        self._last = 0.0

    def __call__(self) -> None:
        self.pipe.alive()
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self.peak_mib = max(self.peak_mib, snapshot(self.pipe)["workers_rss_mib"])


def run(*, purchases: int, warmup: int, processes: int, threads: int, log_dir: Path) -> dict[str, Any]:
    with running_pipeline("mem", processes=processes, threads=threads, log_dir=log_dir) as pipe:
        ready = snapshot(pipe)
        pipe.submit("warm", warmup)
        pipe.wait_awaiting("warm", warmup, timeout=180)
        warmed = snapshot(pipe)

        sampler = PeakSampler(pipe)
        started = db_now(pipe.conn)
        wall = time.monotonic()
        submitted = pipe.submit("run", purchases)
        submit_s = time.monotonic() - wall
        pipe.wait_awaiting("run", purchases, timeout=120 + purchases * 1.0, alive=sampler)
        done = snapshot(pipe)
        timings = pipe.timings("run", submitted)
        return {
            "purchases": purchases,
            "warmup": warmup,
            "ready": ready,
            "after_warmup": warmed,
            "after_run": done,
            "peak_workers_rss_mib_during_run": max(sampler.peak_mib, done["workers_rss_mib"]),
            "growth_workers_rss_mib": round(done["workers_rss_mib"] - warmed["workers_rss_mib"], 1),
            "run": {
                "duration_s": round(timings.last - started, 3),
                "per_s": purchases / (timings.last - started),
                "submit_s": round(submit_s, 3),
                "latency": stats.latency_summary(timings.from_received),
                "latency_from_submit": stats.latency_summary(timings.from_submit),
                "scheduler_redriven": redriven(pipe.scheduler.log_path),
            },
            "bench_pid": os.getpid(),
        }
