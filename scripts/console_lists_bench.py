"""The console's lists with 1,000,000 purchases: server time of the first and the next page, and the plans.

    .venv/bin/python scripts/console_lists_bench.py [--rows 1000000] [--keep]

Makes a throwaway database on the local Postgres (scripts/services.sh), migrates it, fills it with
SQL (generate_series: states, partners, creation times over 90 days, deadlines, ids of every kind;
one history row each), ANALYZEs it, then serves the console in-process (Starlette's TestClient, no network) and times each
page five times (median and worst; "server time" is the whole request: queries and rendering).  The
SQL of each page is captured as it runs and shown with EXPLAIN (ANALYZE, BUFFERS); the script fails
if a plan has a sequential scan on purchases or their history, or a page's median exceeds 50 ms.  The database is
dropped at the end unless --keep.  The README's "Web console" section quotes its output.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FILL = """
INSERT INTO purchases (id, request_id, partner, event_id, section_name, quantity, delivery_type, delivery_deadline,
                       state, state_changed_at, order_id, failure_code, last_error, stalled_from, created_at, updated_at)
SELECT gen_random_uuid(),
       'req-' || lpad(i::text, 8, '0'),
       CASE WHEN i % 5 = 0 THEN 'ticketmaster' ELSE 'tbb' END,
       'EV' || lpad((i % 5000)::text, 5, '0'),
       'Floor', 2, 'mobile_transfer',
       created + make_interval(hours => 24 + (i % 720)),
       state, created + interval '5 minutes',
       CASE WHEN state = 'transfer_complete' THEN 'ORD-' || lpad(i::text, 8, '0') END,
       CASE WHEN state = 'failed' THEN 'NO_INVENTORY_AVAILABLE' END,
       CASE WHEN state = 'stalled' THEN 'TbbUnavailable: 503 from create_quote' END,
       CASE WHEN state = 'stalled' THEN 'received' END,
       created, created
  FROM (SELECT i,
               now() - make_interval(secs => (i * 7.77) % (90 * 86400)) AS created,
               CASE WHEN i % 100 < 85 THEN 'transfer_complete'
                    WHEN i % 100 < 90 THEN 'failed'
                    WHEN i % 100 < 93 THEN 'stalled'
                    WHEN i % 100 < 95 THEN 'needs_attention'
                    WHEN i % 100 < 97 THEN 'awaiting_transfer'
                    ELSE 'cancelled' END AS state
          FROM generate_series(1, :rows) AS i) AS g
"""

# One history row per purchase (the state it is in, when it was created): what the rates page reads.
FILL_HISTORY = """
INSERT INTO purchase_transitions (purchase_id, kind, from_state, to_state, reason, attempt, created_at)
SELECT id, 'transition', NULL, state, 'bench', 0, created_at FROM purchases
"""

PAGES = [
    ("stalled, first page", "/purchases?state=stalled"),
    ("stalled, next page", None),  # the first page's Next link
    ("all states, first page", "/purchases?state=all"),
    ("all states, next page", None),
    ("stalled + ticketmaster", "/purchases?state=stalled&partner=ticketmaster"),
    ("stalled, deadline within 48 h", "/purchases?state=stalled&deadline_within=48"),
    ("stalled, one day", "/purchases?state=stalled&from={day}&to={day}"),
    ("search: request id prefix", "/search?q=req-0001234"),
    ("search: order id prefix", "/search?q=ORD-000099"),
    ("search: event id prefix", "/search?q=EV0042"),
    ("search: a prefix of every request id", "/search?q=req-"),
    ("rates, last 60 minutes", "/rates?minutes=60"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="do not drop the database")
    args = parser.parse_args()

    from tests.support import servers

    database = servers.create_database("fulfil_console_bench")
    try:
        return run(database, args.rows)
    finally:
        if not args.keep:
            servers.drop_database(database)


def run(database: Any, rows: int) -> int:
    import datetime as dt

    from sqlalchemy import event, text

    from tests.support import servers

    servers.migrate(database)
    os.environ["DATABASE_URL"] = database.url
    from fulfilment.db import engine_for
    from fulfilment.settings import get_settings

    get_settings.cache_clear()
    engine = engine_for(database.url)
    started = time.monotonic()
    with engine.begin() as connection:
        connection.execute(text(FILL), {"rows": rows})
        connection.execute(text(FILL_HISTORY))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE purchases"))
        connection.execute(text("VACUUM ANALYZE purchase_transitions"))
        size = connection.execute(text("SELECT pg_size_pretty(pg_total_relation_size('purchases'))")).scalar_one()
        counts = dict(connection.execute(text("SELECT state, count(*) FROM purchases GROUP BY state")).all())
    print(f"{rows:,} purchases made in {time.monotonic() - started:.0f} s; table and indexes {size}; {counts}")

    captured: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if "purchase" in statement and not statement.lstrip().upper().startswith("EXPLAIN"):
            captured.append((statement, parameters))

    client = console_client()
    day = (dt.datetime.now(dt.UTC) - dt.timedelta(days=10)).date().isoformat()
    failures: list[str] = []
    previous = ""
    for name, path in PAGES:
        url = next_link(previous) if path is None else path.format(day=day)
        if url is None:
            failures.append(f"{name}: no Next link")
            continue
        times = []
        for _ in range(6):
            captured.clear()
            begun = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - begun) * 1000)
            assert response.status_code in (200, 303), (url, response.status_code, response.text[:300])
        times = times[1:]  # the first warms the pool and the plan cache
        previous = response.text
        median, worst = statistics.median(times), max(times)
        print(f"\n## {name}: GET {url}\nserver time: median {median:.1f} ms, worst {worst:.1f} ms "
              f"(5 runs, {len(captured)} queries on purchases)")
        if median > 50:
            failures.append(f"{name}: median {median:.1f} ms > 50 ms")
        with engine.connect() as connection:
            for statement, parameters in captured:
                plan = "\n".join(row[0] for row in connection.exec_driver_sql(
                    f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {statement}", parameters))
                print(f"\n{' '.join(statement.split())[:400]}\n{plan}")
                if re.search(r"Seq Scan on purchase", plan):
                    failures.append(f"{name}: sequential scan on purchases or their history")
    print("\nFAIL:\n  " + "\n  ".join(failures) if failures else "\nPASS: every page under 50 ms, no sequential scan")
    return 1 if failures else 0


def console_client() -> Any:
    from fulfilment.console.app import create_app
    from fulfilment.console.auth import hash_password, load_users
    from fulfilment.console.config import ConsoleConfig
    from fulfilment.settings import ConsoleSettings, get_policy_settings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from starlette.testclient import TestClient

    settings = ConsoleSettings(console_users=f"bench:viewer:{hash_password('bench-pw', n=2**10)}",  # type: ignore[arg-type]
                               console_session_secret="bench-session-secret-0123456789abcdef")
    config = ConsoleConfig(settings=settings, users=load_users(settings), database_url=os.environ["DATABASE_URL"],
                           broker_url="amqp://guest:guest@127.0.0.1:1/%2F", policy=get_policy_settings(), partner=None)
    client = TestClient(create_app(config), follow_redirects=False, headers={"Origin": "http://testserver"})
    page = client.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    response = client.post("/login", data={"csrf_token": csrf, "username": "bench", "password": "bench-pw"})
    assert response.status_code == 303, response.text
    return client


def next_link(html: str) -> str | None:
    match = re.search(r'id="next" href="([^"]+)"', html)
    return match.group(1).replace("&amp;", "&") if match else None


if __name__ == "__main__":
    sys.exit(main())
