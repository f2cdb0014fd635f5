"""`python -m bench` (make bench): run the benchmark parts, print a table, write bench-results/bench.json.

  --quick                 smoke mode: tiny sizes, one repeat, no 1M history
  --repeats N             (a)/(b) runs each, alternated a, b, a, b, ... (default 3)
  --purchases N           purchases (chains) per (a)/(b) run (default 300)
  --sizes 10000,...       history sizes for (d) (default 10000,100000,1000000)
  --memory-purchases N    purchases for (e) (default 10000, after a 200 warm-up)
  --processes/--threads   dramatiq worker settings for (a), (b), (e) and (f) (default 2 and 4)
  --settle-seconds S      quiet time before reading pg_stat_database around (a)/(b) (default 11)
  --latency-seconds S     seconds of submissions per rate in (f) (default 60; 10 with --quick)
  --latency-fractions F   rates of (f), as fractions of the maximum (default 0.5,0.25)
  --latency-max-rate R    the maximum for (f), purchases/s (default: the median of (b) in this run)
  --parts a,b,d,e,f,g     run only some parts (g: the floor, the raw chain plus the two partner
                          calls, alternated with a and b; h: the pipeline on the HA stack after each
                          repeat of b, then its open-loop p99 --repeats times after f, `make ha-up`
                          first, with b and f: not in the default parts)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import infra, report, stats
from bench.infra import PIPELINE_SETTINGS, SANDBOX_ENV

OUT = Path("bench-results/bench.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke mode: tiny sizes, 1 repeat, no 1M")
    parser.add_argument("--repeats", type=int, default=None, help="(a)/(b) runs each (default 3)")
    parser.add_argument("--purchases", type=int, default=None, help="purchases per (a)/(b) run (default 300)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed purchases before each (a)/(b) run")
    parser.add_argument("--sizes", default=None, help="history sizes for (d), e.g. 10000,100000,1000000")
    parser.add_argument("--ticks", type=int, default=None, help="timed ticks per scheduler job (default 7)")
    parser.add_argument("--memory-purchases", type=int, default=None, help="purchases for (e) (default 10000)")
    parser.add_argument("--memory-warmup", type=int, default=None, help="warm-up purchases for (e) (default 200)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--settle-seconds", type=float, default=None,
                        help="quiet time before reading pg_stat_database around (a)/(b) (default 11)")
    parser.add_argument("--latency-seconds", type=float, default=None, help="seconds per rate in (f) (default 60)")
    parser.add_argument("--latency-fractions", default="0.5,0.25", help="rates of (f), fractions of the maximum")
    parser.add_argument("--latency-max-rate", type=float, default=None,
                        help="the maximum for (f), purchases/s (default: the median of (b) in this run)")
    parser.add_argument("--parts", default="a,b,d,e,f,g", help="which parts to run (c needs a and b; f needs b "
                                                              "or --latency-max-rate)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "repeats": 1 if quick else 3, "purchases": 30 if quick else 300, "warmup": 10 if quick else 30,
        "sizes": "2000,10000" if quick else "10000,100000,1000000", "ticks": 3 if quick else 7,
        "memory_purchases": 200 if quick else 10_000, "memory_warmup": 20 if quick else 200,
        "latency_seconds": 10.0 if quick else 60.0, "settle_seconds": 11.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.sizes = [int(s.replace("_", "")) for s in str(args.sizes).split(",") if s.strip()]
    args.parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not args.parts <= {"a", "b", "c", "d", "e", "f", "g", "h"}:
        parser.error("--parts takes a comma-separated subset of a,b,d,e,f,g,h")
    if "h" in args.parts and not {"b", "f"} <= args.parts:
        parser.error("part h compares with the single node: it needs parts b and f")
    try:
        args.latency_fractions = [float(f) for f in str(args.latency_fractions).split(",") if f.strip()]
    except ValueError:
        parser.error("--latency-fractions takes comma-separated numbers, e.g. 0.5,0.25")
    if not args.latency_fractions or not all(0 < f <= 1 for f in args.latency_fractions):
        parser.error("--latency-fractions must be within (0, 1]")
    if "f" in args.parts and "b" not in args.parts and args.latency_max_rate is None:
        parser.error("part f needs part b (its measured maximum) or --latency-max-rate")
    if args.latency_seconds <= 0 or args.settle_seconds < 0:
        parser.error("--latency-seconds must be positive and --settle-seconds not negative")
    for name in ("repeats", "purchases", "ticks", "memory_purchases", "processes", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # clean up as on Ctrl-C
    from bench import latency, machine, memory, pipeline, raw_dramatiq, scheduler_cost
    from tests.support import servers

    servers.require_servers()
    log_dir = Path(tempfile.mkdtemp(prefix="fulfil-bench-"))
    started = time.monotonic()
    results: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "bench", *(argv if argv is not None else sys.argv[1:])]),
        "options": {k: sorted(v) if isinstance(v, set) else (str(v) if isinstance(v, Path) else v)
                    for k, v in vars(args).items()},
        "settings": {"processes": args.processes, "threads": args.threads,
                     "pipeline_env": PIPELINE_SETTINGS, "sandbox_env": SANDBOX_ENV,
                     "raw_broker": "RabbitmqBroker(confirm_delivery=True), default middleware"},
        "log_dir": str(log_dir),
        "errors": {},
    }
    out: Path = args.out

    def save() -> None:
        results["wall_s"] = round(time.monotonic() - started, 1)
        results["notes"] = list(infra.NOTES)
        report.write_json(results, out)

    def part(name: str, work: Any, key: str | None = None) -> Any:
        """Run one part; record its result under `key` (saved at once) or its error, and go on."""
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        begun = time.monotonic()
        try:
            found = work()
            if key is not None:
                results[key] = found
            return found
        except KeyboardInterrupt:
            raise
        except Exception as error:  # noqa: BLE001  record it, go on with the other parts
            results["errors"][name] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
            return None
        finally:
            print(f"bench: {name} done in {time.monotonic() - begun:.0f}s", file=sys.stderr, flush=True)
            save()

    interrupted = False
    try:
        with contextlib.ExitStack() as stack:
            database = servers.create_database("fulfil_bench_info")
            stack.callback(servers.drop_database, database)
            results["machine"] = machine.describe(database.dsn)
        workers = {"processes": args.processes, "threads": args.threads}
        runs: dict[str, list[dict[str, Any]]] = {"raw": [], "pipeline": [], "floor": [], "ha": []}
        for repeat in range(1, args.repeats + 1):
            if "a" in args.parts:
                found = part(f"(a) raw dramatiq run {repeat}", lambda repeat=repeat: raw_dramatiq.run(
                    purchases=args.purchases, warmup=args.warmup, log_dir=log_dir / f"a{repeat}",
                    settle_seconds=args.settle_seconds, **workers))
                if found:
                    runs["raw"].append(found)
            if "b" in args.parts:
                found = part(f"(b) pipeline run {repeat}", lambda repeat=repeat: pipeline.run(
                    purchases=args.purchases, warmup=args.warmup, log_dir=log_dir / f"b{repeat}",
                    settle_seconds=args.settle_seconds, **workers))
                if found:
                    runs["pipeline"].append(found)
            if "h" in args.parts:  # right after this repeat's (b): the ratio repeat by repeat
                from bench import ha

                found = part(f"(h) HA stack: pipeline run {repeat}", lambda repeat=repeat: pipeline.run(
                    purchases=args.purchases, warmup=args.warmup, log_dir=log_dir / f"h{repeat}",
                    settle_seconds=0, target=ha.target, **workers))
                if found:
                    runs["ha"].append(found)
            if "g" in args.parts:
                found = part(f"(g) the floor: raw chain + partner calls, run {repeat}", lambda repeat=repeat:
                             raw_dramatiq.run(purchases=args.purchases, warmup=args.warmup, log_dir=log_dir / f"g{repeat}",
                                              settle_seconds=args.settle_seconds, with_partner=True, **workers))
                if found:
                    runs["floor"].append(found)
            results["throughput"] = report.throughput_summary(runs)
            save()
        if "f" in args.parts:
            measured = (results.get("throughput") or {}).get("pipeline_per_s", {}).get("median")
            max_per_s = args.latency_max_rate or measured
            if max_per_s:
                source = "--latency-max-rate" if args.latency_max_rate else "median of (b) in this run"
                found = part("(f) open-loop latency", lambda: latency.run(
                    max_per_s=max_per_s, fractions=args.latency_fractions, seconds=args.latency_seconds,
                    warmup=args.warmup, log_dir=log_dir / "f", **workers))
                if found:
                    results["latency"] = {**found, "max_source": source}
            else:
                results["errors"]["(f) open-loop latency"] = "no maximum: (b) measured nothing"
            save()
        if "h" in args.parts:
            from bench import ha

            on_ha: dict[str, Any] = {"runs": runs["ha"], "latency_runs": []}
            if runs["ha"]:
                ha_max = stats.median([r["per_s"] for r in runs["ha"]])
                fraction = args.latency_fractions[0]
                for repeat in range(1, args.repeats + 1):
                    found = part(f"(h) HA stack: open-loop latency run {repeat}", lambda repeat=repeat: latency.run(
                        max_per_s=ha_max, fractions=[fraction], seconds=args.latency_seconds, warmup=args.warmup,
                        log_dir=log_dir / f"h-latency{repeat}", target=ha.target, **workers))
                    if found:
                        on_ha["latency_runs"].append(found)
            results["ha"] = on_ha
            on_ha["ratios"] = ha.ratios(results, on_ha)
            save()
        if "d" in args.parts:
            part("(d) scheduler tick cost", lambda: scheduler_cost.run(sizes=args.sizes, ticks=args.ticks),
                 key="scheduler")
        if "e" in args.parts:
            part("(e) worker memory", lambda: memory.run(
                purchases=args.memory_purchases, warmup=args.memory_warmup, log_dir=log_dir / "e", **workers),
                 key="memory")
    except KeyboardInterrupt:
        interrupted = True
        results["errors"]["interrupted"] = "stopped by Ctrl-C / SIGTERM; everything started was cleaned up"
    save()
    print(report.render(results))
    if "ha" in results:
        from bench import ha

        print("\n" + ha.render(results["ha"]))
    print(f"\nJSON: {out}   logs: {log_dir}")
    return 130 if interrupted else (1 if results["errors"] else 0)


if __name__ == "__main__":
    sys.exit(main())
