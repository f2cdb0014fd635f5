"""The printed table and the JSON file of a benchmark run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import stats


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    tmp.replace(path)


def throughput_summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians over the repeats of (a) and (b), the ratio (b)/(a) of the medians, latency medians."""
    summary: dict[str, Any] = {"runs": runs}
    for name in ("raw", "pipeline", "floor"):
        if runs.get(name):
            summary[f"{name}_per_s"] = stats.spread([r["per_s"] for r in runs[name]])
    if "raw_per_s" in summary and "pipeline_per_s" in summary:
        summary["ratio_pipeline_over_raw"] = stats.ratio(summary["pipeline_per_s"]["median"],
                                                         summary["raw_per_s"]["median"])
    if "floor_per_s" in summary and "pipeline_per_s" in summary:
        summary["ratio_pipeline_over_floor"] = stats.ratio(summary["pipeline_per_s"]["median"],
                                                           summary["floor_per_s"]["median"])
    for source, name in (("latency", "pipeline_latency_ms"), ("latency_from_submit", "pipeline_latency_from_submit_ms")):
        measured = [r[source] for r in runs.get("pipeline", []) if source in r]
        if measured:
            summary[name] = {key: stats.spread([m[key] for m in measured]) for key in ("p50_ms", "p95_ms", "p99_ms")}
    for name in ("raw", "pipeline", "floor"):
        if runs.get(name):
            summary[f"{name}_per_purchase"] = per_purchase_summary(runs[name])
    over_raw = cpu_over_raw(runs)
    if over_raw:
        summary["pipeline_per_purchase"]["worker_cpu_over_raw"] = stats.spread(over_raw)
    return summary


def cpu_over_raw(runs: dict[str, list[dict[str, Any]]]) -> list[float]:
    """Worker CPU per purchase over the raw chain's per chain, repeat by repeat (run i of (b) and
    run i of (a), measured minutes apart): on a shared machine CPU time per unit of work varies
    with the neighbours (2x here between runs), and both sides of one repeat vary alike."""
    return [cpu_ms(pipe) / cpu_ms(raw) for raw, pipe in zip(runs.get("raw", []), runs.get("pipeline", []), strict=False)
            if cpu_ms(raw) > 0]


def sandbox_cpu_ms(run: dict[str, Any]) -> float | None:
    """CPU the partner sandbox spent per purchase: the same work in every run, so a yardstick of
    how fast the machine was during the run."""
    seconds = run.get("cpu_seconds", {}).get("sandbox")
    return None if seconds is None else seconds * 1000 / run["purchases"]


# What a purchase costs, per run (bench/costs.py), with the table's labels.
COSTS = (
    ("statements", "DB statements (incl. BEGIN/COMMIT)", 1),
    ("statements_begin_commit_rollback", "  of which BEGIN/COMMIT/ROLLBACK", 1),
    ("transactions", "DB transactions (commits + rollbacks)", 1),
    ("transactions_without_begin", "  without BEGIN (pre-pings, autocommit)", 1),
    ("rows_written", "DB rows inserted + updated + deleted", 1),
    ("enqueued", "RabbitMQ messages enqueued (publishes)", 1),
)


def per_purchase_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repeats of each per-purchase cost (those every run measured) and worker CPU."""
    summary: dict[str, Any] = {"worker_cpu_ms": stats.spread([cpu_ms(r) for r in runs])}
    for key, _, _ in COSTS:
        values = [r.get("costs", {}).get(key) for r in runs]
        if values and all(v is not None for v in values):
            summary[key] = stats.spread([float(v) for v in values if v is not None])
    return summary


def num(value: float | None, digits: int = 1) -> str:
    """A number for the table: thousands separators, fixed decimals, '-' for missing."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def row(label: str, cells: list[str], width: int = 44, cell: int = 11) -> str:
    return f"  {label:<{width}}" + "".join(f"{c:>{cell}}" for c in cells)


def _throughput(t: dict[str, Any], purchases: Any) -> list[str]:
    runs = t["runs"]
    n = max(len(runs.get("raw", [])), len(runs.get("pipeline", [])), len(runs.get("floor", [])))
    lines = [f"(a)/(b) throughput: {purchases} per run, runs alternated a, b, a, b, ...; purchases/s on the DB clock",
             row("", [f"run {i + 1}" for i in range(n)] + ["median"])]
    for key, label in (("raw", "(a) raw dramatiq, 3-actor chain"), ("pipeline", "(b) full pipeline -> awaiting_transfer"),
                       ("floor", "(g) floor: (a) + the 2 partner calls")):
        if runs.get(key):
            lines.append(row(label + "  /s", [num(r["per_s"]) for r in runs[key]] + [""] * (n - len(runs[key]))
                             + [num(t[f"{key}_per_s"]["median"])]))
    if t.get("ratio_pipeline_over_raw") is not None:
        lines.append(row("(c) ratio (b)/(a) of the medians", [""] * n + [num(t["ratio_pipeline_over_raw"], 3)]))
    if t.get("ratio_pipeline_over_floor") is not None:
        lines.append(row("    ratio (b)/(g): what the pipeline's own work costs", [""] * n
                         + [num(t["ratio_pipeline_over_floor"], 3)]))
    for source, name, title in (
            ("latency", "pipeline_latency_ms", "from its received transition (DB clock)"),
            ("latency_from_submit", "pipeline_latency_from_submit_ms", "from its confirmed submit (queueing included)")):
        if t.get(name):
            lines.append(f"  (b) ms to awaiting_transfer per purchase, {title}")
            for key in ("p50_ms", "p95_ms", "p99_ms"):
                lines.append(row(f"    {key[:3]}", [num(r[source][key], 0) for r in runs["pipeline"]]
                                 + [""] * (n - len(runs["pipeline"])) + [num(t[name][key]["median"], 0)]))
    for key, label in (("raw", "(a)"), ("pipeline", "(b)"), ("floor", "(g)")):
        if runs.get(key):
            lines.append(row(f"{label} machine CPU busy during the run", [f"{r['machine_cpu_busy']:.0%}" for r in runs[key]]))
            lines.append(row(f"{label} seconds to submit all", [num(r.get("submit_s", r.get("enqueue_s")), 2)
                                                                 for r in runs[key]]))
    lines.extend(_per_purchase(t, n))
    return lines


def _per_purchase(t: dict[str, Any], n: int) -> list[str]:
    """Per purchase (a chain for (a)): worker CPU, statements, transactions, rows, publishes; the
    most frequent statements and the messages by queue of the last (b) run."""
    runs = t["runs"]
    lines: list[str] = []
    for key, label in (("raw", "(a)"), ("pipeline", "(b)"), ("floor", "(g)")):
        if not runs.get(key):
            continue
        lines.append(f"  {label} per {'purchase' if key == 'pipeline' else 'chain'}, on the servers (bench/costs.py)")
        medians = t.get(f"{key}_per_purchase", {})
        cells = [num(cpu_ms(r)) for r in runs[key]] + [""] * (n - len(runs[key]))
        lines.append(row("    worker CPU ms", cells + [num(medians.get("worker_cpu_ms", {}).get("median"))]))
        if key == "pipeline" and medians.get("worker_cpu_over_raw"):
            ratios = cpu_over_raw(runs)
            lines.append(row("    worker CPU / (a)'s in the same repeat", [num(r, 2) for r in ratios]
                             + [""] * (n - len(ratios)) + [num(medians["worker_cpu_over_raw"]["median"], 2)]))
        if key != "raw" and any(sandbox_cpu_ms(r) is not None for r in runs[key]):
            lines.append(row("    sandbox CPU ms (yardstick: same work)", [num(sandbox_cpu_ms(r)) for r in runs[key]]))
        for cost, title, digits in COSTS:
            values = [r.get("costs", {}).get(cost) for r in runs[key]]
            if all(v is None for v in values):
                continue
            median = medians.get(cost, {}).get("median")
            lines.append(row(f"    {title}", [num(v, digits) for v in values] + [""] * (n - len(values))
                             + [num(median, digits)]))
        last = runs[key][-1].get("costs") or {}
        if last.get("unavailable"):
            lines.append(f"    server counters not read: {last['unavailable'].splitlines()[0]}")
        elif last.get("statements") is None and last.get("statements_unavailable"):
            lines.append(f"    DB statements: - ({last['statements_unavailable']}; see bench/costs.py)")
    last = (runs.get("pipeline") or [{}])[-1].get("costs") or {}
    if last.get("enqueued_by_queue"):
        lines.append("  (b) messages enqueued per purchase, by queue (last run): " + ", ".join(
            f"{queue} {count:g}" for queue, count in last["enqueued_by_queue"].items()))
    if last.get("top_statements"):
        lines.append("  (b) most frequent statements per purchase (last run):")
        for entry in last["top_statements"][:10]:
            lines.append(f"    {entry['per_purchase']:7.2f}  {_short_sql(entry['query'])}")
    return lines


def _short_sql(query: str, width: int = 110) -> str:
    text = " ".join(query.split())
    return text if len(text) <= width else text[:width - 3] + "..."


def _latency(f: dict[str, Any]) -> list[str]:
    """(f): one column per rate."""
    levels = f["levels"]
    lines = [f"(f) open-loop latency: submissions at a fixed rate (by the clock) for {f['seconds']:g} s per rate; "
             f"maximum {num(f['max_per_s'])}/s ({f.get('max_source', '')})",
             row("rate", [f"{lv['fraction']:g} max" for lv in levels], cell=14),
             row("  target / sent purchases/s", [f"{num(lv['target_per_s'])} / {num(lv['sent_per_s'])}"
                                                 for lv in levels], cell=14),
             row("  purchases", [f"{lv['purchases']:,}" for lv in levels], cell=14)]
    for source, title in (("latency_from_submit", "ms from confirmed submit to awaiting_transfer"),
                          ("latency_from_schedule", "ms from scheduled submit (sender lateness included)"),
                          ("latency_from_received", "ms from received transition (DB clock)")):
        lines.append(f"  {title}")
        for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
            lines.append(row(f"    {key[:-3]}", [num(lv[source][key], 0) for lv in levels], cell=14))
    lines.append(row("  sender late ms p99 / max", [f"{num(lv['sender_late_ms']['p99'])} / "
                                                     f"{num(lv['sender_late_ms']['max'])}" for lv in levels], cell=14))
    lines.append(row("  machine CPU busy", [f"{lv['machine_cpu_busy']:.0%}" for lv in levels], cell=14))
    lines.append(row("  worker CPU ms per purchase", [num(cpu_ms(lv)) for lv in levels], cell=14))
    return lines


def cpu_ms(run: dict[str, Any]) -> float:
    """CPU time the worker processes spent per purchase (or chain) in a run, in ms."""
    return run["cpu_seconds"]["workers"] * 1000 / run["purchases"]


_JOBS = (("redrive", "redrive_due"), ("deadlines", "flag_near_deadlines"), ("outbox", "relay_outbox"),
         ("gauges", "update_gauges"))


def _scheduler(s: dict[str, Any]) -> list[str]:
    sizes = s["sizes"]
    lines = [f"(d) scheduler tick, ms: median of {s['ticks']} ticks, each doing the due batch "
             f"(batch size {s['batch_size']}; items per tick in brackets)",
             row("purchases in history", [f"{x['purchases']:,}" for x in sizes], cell=16)]
    for key, label in _JOBS:
        lines.append(row(label, [f"{num(x['jobs'][key]['ms']['median'])} [{x['jobs'][key]['items_per_tick']:g}]"
                                 for x in sizes], cell=16))
    lines.append(row("tick total", [num(x["tick_ms"]) for x in sizes], cell=16))
    lines.append(row("flag_near_deadlines, ms per flag", [num(per_item(x["jobs"]["deadlines"]), 3) for x in sizes],
                     cell=16))
    lines.append(row("its query alone (EXPLAIN ANALYZE ms):", [], cell=16))
    for key, label in _JOBS:
        lines.append(row(f"  {label}", [num(x["jobs"][key]["plan"]["execution_ms"], 2) for x in sizes], cell=16))
    lines.append(row("stage load s / vacuum analyze s",
                     [f"{x['loaded']['load_s']:.0f} / {x['loaded']['vacuum_analyze_s']:.0f}" for x in sizes], cell=16))
    largest = sizes[-1]
    lines.append(f"  plans at {largest['purchases']:,} purchases (scan nodes):")
    for key, _ in _JOBS:
        plan = largest["jobs"][key]["plan"]
        lines.append(f"    {largest['jobs'][key]['sql']}")
        lines.append(f"      {plan['execution_ms']:.2f} ms: " + "; ".join(plan["scans"]))
    seq = {f"{x['purchases']:,}": x["seq_scans_on_watched"] for x in sizes if x["seq_scans_on_watched"]}
    lines.append("  Seq Scan on purchases/outbox_events in any plan: " + (json.dumps(seq) if seq else "none"))
    return lines


def per_item(job: dict[str, Any]) -> float | None:
    """A scheduler job's median tick time per item it handled (None if it handled none)."""
    items = job["items_per_tick"]
    return job["ms"]["median"] / items if items else None


def _memory(m: dict[str, Any]) -> list[str]:
    lines = [f"(e) dramatiq worker RSS, MiB (VmRSS): ready, after {m['warmup']:,} warm-up, "
             f"after {m['purchases']:,} more purchases",
             row("process", ["ready", "warm", "after", "growth"])]
    before = {p["pid"]: p for p in m["after_warmup"]["processes"]}
    ready = {p["pid"]: p for p in m["ready"]["processes"]}
    for p in m["after_run"]["processes"]:
        start = before.get(p["pid"], {}).get("rss_mib")
        lines.append(row(f"{p['role']} pid {p['pid']} ({p['threads']} threads)", [
            num(ready.get(p["pid"], {}).get("rss_mib")), num(start), num(p["rss_mib"]),
            num(p["rss_mib"] - start if start is not None else None)]))
    lines.append(row("worker processes, sum", [num(m["ready"]["workers_rss_mib"]), num(m["after_warmup"]["workers_rss_mib"]),
                                               num(m["after_run"]["workers_rss_mib"]), num(m["growth_workers_rss_mib"])]))
    lines.append(row("all dramatiq processes, sum", [num(m[k]["all_rss_mib"]) for k in ("ready", "after_warmup", "after_run")]))
    lines.append(row("scheduler process", [num(m[k]["scheduler_rss_mib"]) for k in ("ready", "after_warmup", "after_run")]))
    run = m["run"]
    lines.append(f"  peak worker sum during the run {num(m['peak_workers_rss_mib_during_run'])} MiB; the run: "
                 f"{num(run['per_s'])} purchases/s, latency p50/p95/p99 {num(run['latency']['p50_ms'], 0)}/"
                 f"{num(run['latency']['p95_ms'], 0)}/{num(run['latency']['p99_ms'], 0)} ms from received, "
                 f"p50 {num(run['latency_from_submit']['p50_ms'], 0)} ms from submit, "
                 f"{run['scheduler_redriven']} steps re-sent by the scheduler")
    return lines


def render(results: dict[str, Any]) -> str:
    from bench.machine import one_line

    lines = [f"ticket-fulfilment benchmark, {results['started_at']}, wall time {results.get('wall_s', 0) / 60:.1f} min",
             f"  command  {results['command']}"]
    if "machine" in results:
        lines.append(f"  machine  {one_line(results['machine'])}")
    settings = results["settings"]
    lines.append(f"  workers  dramatiq --processes {settings['processes']} --threads {settings['threads']} "
                 "for (a), (b), (e) and (f)")
    if results.get("throughput"):
        lines.append("")
        lines.extend(_throughput(results["throughput"], results["options"]["purchases"]))
    for key, section in (("latency", _latency), ("scheduler", _scheduler), ("memory", _memory)):
        if results.get(key):
            lines.append("")
            lines.extend(section(results[key]))
    if results.get("notes"):
        lines.append("")
        lines.append("NOTES:")
        lines.extend(f"  {note.splitlines()[0]}" for note in results["notes"])
    if results.get("errors"):
        lines.append("")
        lines.append("ERRORS (parts not measured):")
        lines.extend(f"  {name}: {error.splitlines()[0] if error else ''}" for name, error in results["errors"].items())
    return "\n".join(lines)
