"""EXPLAIN (ANALYZE, BUFFERS) of the scheduler's SQL, and what the plans scan.

The statements are the ones the scheduler jobs really send (captured at the DBAPI
cursor, with their parameters), explained inside a transaction that is rolled back:
REDRIVE_SQL updates rows and DUE_FLAGS_SQL takes row locks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg

# Tables whose full scan would make a tick grow with the history.
WATCHED_TABLES = ("purchases", "outbox_events")


def explain(dsn: str, statement: str, params: Any) -> dict[str, Any]:
    plans: dict[str, Any] = {}
    with psycopg.connect(dsn) as conn:
        for fmt in ("TEXT", "JSON"):
            rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT {fmt}) {statement}", params).fetchall()
            conn.rollback()
            plans[fmt] = "\n".join(r[0] for r in rows) if fmt == "TEXT" else rows[0][0][0]
    nodes = list(walk(plans["JSON"]["Plan"]))
    return {
        "statement": statement.strip(),
        "text": plans["TEXT"],
        "json": plans["JSON"],
        "execution_ms": plans["JSON"].get("Execution Time"),
        "scans": [scan_summary(n) for n in nodes if "Relation Name" in n or "Index Name" in n],
        "seq_scans_on_watched": sorted({n["Relation Name"] for n in nodes
                                        if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in WATCHED_TABLES}),
    }


def walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from walk(child)


def scan_summary(node: dict[str, Any]) -> str:
    kind = node["Node Type"]
    index = f" using {node['Index Name']}" if "Index Name" in node else ""
    relation = f" on {node['Relation Name']}" if "Relation Name" in node else ""
    loops = node.get("Actual Loops", 1)
    rows = node.get("Actual Rows", 0) * loops
    buffers = node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0)
    return f"{kind}{index}{relation} (rows {rows:g}, {buffers} buffers)"


def short(plan: dict[str, Any]) -> str:
    scans = "; ".join(plan["scans"]) or "no table scans"
    return f"{plan['execution_ms']:.2f} ms: {scans}"
