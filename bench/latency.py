"""(f) Open-loop latency: purchases submitted at a fixed rate, latency to AWAITING_TRANSFER.

One pipeline (bench/pipeline.py) and, for each fraction of the maximum throughput (by default
the median of (b) in the same run: half, then a quarter), `seconds` of submissions at
`fraction * max` per second.  Submission i is due at start + i / rate, whatever happened to
the ones before it (a late submission does not push the later ones back: no coordinated
omission); a submission the publisher could not start on time is sent at once, and its
lateness is reported.  A level is measured once all its purchases reached AWAITING_TRANSFER
(and the next level starts from an idle pipeline).

Latency of a purchase = its awaiting_transfer transition's created_at (the database's now():
the start of the transaction that moved it, which begins after the partner's answer) minus
  - from_submit:    the moment RabbitMQ confirmed its submit (time.time() in this process;
                    Postgres runs on this machine, so one clock), as the issue defines it;
  - from_schedule:  the moment it was due to be submitted (includes any lateness of the sender).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bench import procfs, stats
from bench.pipeline import running_pipeline


def schedule(rate: float, seconds: float) -> list[float]:
    """Offsets (s) from the start at which submissions are due: `rate` per second for `seconds`."""
    if rate <= 0 or seconds <= 0:
        raise ValueError(f"rate and seconds must be positive, got {rate} and {seconds}")
    return [i / rate for i in range(max(1, round(rate * seconds)))]


def open_loop(submit: Any, offsets: list[float], *, prefix: str, check: Any = None,
              clock: Any = time.monotonic, sleep: Any = time.sleep, wall: Any = time.time) -> dict[str, Any]:
    """Submit `prefix-i` at offsets[i] after the start, by the clock; returns per request the wall
    clock epoch it was due at and the epoch its submit was confirmed, and the sender's lateness."""
    started = clock() + 0.05
    to_wall = wall() - clock()  # monotonic -> epoch, taken once (no jumps mid-level)
    due: dict[str, float] = {}
    confirmed: dict[str, float] = {}
    late: list[float] = []
    last_check = started
    for i, offset in enumerate(offsets):
        target = started + offset
        wait = target - clock()
        if wait > 0:
            sleep(wait)
        late.append(max(0.0, clock() - target))
        request_id = f"{prefix}-{i}"
        submit(request_id)
        confirmed[request_id] = wall()
        due[request_id] = target + to_wall
        if check is not None and clock() - last_check > 1.0:
            check()
            last_check = clock()
    span = clock() - started  # from the first send due to the last one done: (n - 1) intervals
    return {"due": due, "confirmed": confirmed, "lateness_s": late, "span_s": span}


def level(pipe: Any, *, fraction: float, max_per_s: float, seconds: float) -> dict[str, Any]:
    rate = max_per_s * fraction
    offsets = schedule(rate, seconds)
    prefix = f"open{round(fraction * 1000)}"
    cpu = procfs.CpuWindow({
        "workers": procfs.tree(pipe.workers.pid),
        "scheduler": [pipe.scheduler.pid],
        "sandbox": [pipe.sandbox.process.pid] if pipe.sandbox.process else [],
        "bench": [os.getpid()],
    })
    sent = open_loop(pipe.submit_one, offsets, prefix=prefix, check=pipe.alive)
    count = len(offsets)
    pipe.wait_awaiting(prefix, count, timeout=120 + seconds * 2)
    usage = cpu.finish()
    timings = pipe.timings(prefix, sent["confirmed"])
    from_schedule = pipe.timings(prefix, sent["due"]).from_submit
    late = sent["lateness_s"]
    return {
        "fraction": fraction,
        "target_per_s": rate,
        "purchases": count,
        "seconds": seconds,
        "sent_per_s": (count - 1) / sent["span_s"] if count > 1 and sent["span_s"] > 0 else None,
        "sender_late_ms": {"p99": stats.percentile(late, 99) * 1000, "max": max(late) * 1000,
                           "over_10ms": sum(1 for x in late if x > 0.010)},
        "latency_from_submit": stats.latency_summary(timings.from_submit),
        "latency_from_schedule": stats.latency_summary(from_schedule),
        "latency_from_received": stats.latency_summary(timings.from_received),
        **usage,
    }


def run(*, max_per_s: float, fractions: list[float], seconds: float, warmup: int, processes: int, threads: int,
        log_dir: Path, target: Any = None) -> dict[str, Any]:
    with running_pipeline("lat", processes=processes, threads=threads, log_dir=log_dir, target=target) as pipe:
        if warmup:
            pipe.submit("warm", warmup)
            pipe.wait_awaiting("warm", warmup, timeout=180)
        levels = [level(pipe, fraction=fraction, max_per_s=max_per_s, seconds=seconds) for fraction in fractions]
    return {"max_per_s": max_per_s, "seconds": seconds, "levels": levels}
