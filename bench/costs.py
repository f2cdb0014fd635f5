"""What a purchase costs the servers: database statements and transactions, broker messages.

Read on the servers, so every process of a part counts (workers, the scheduler, the
publisher), and compared before/after the timed batch of (a) and (b):

  statements    pg_stat_statements `calls` of top-level statements in the part's database
                (BEGIN/COMMIT/ROLLBACK included: each is a round trip; the pool's pre-ping, an
                empty query, is not: see transactions_without_begin).  Needs the library
                preloaded (shared_preload_libraries) and the extension created in the admin
                database `fulfil`; without it the figure is "-" and a note says why.
  transactions  pg_stat_database xact_commit + xact_rollback of the part's database (and
                tup_inserted/updated/deleted).  Backends report these at most once a second,
                and an idle backend only after 10 s, so that snapshot is taken after
                SETTLE_SECONDS of quiet; the scheduler's ticks in that time are counted too.
  enqueued      messages each queue of the part's RabbitMQ vhost took in: the `next_seq_id`
                of its backing queue (RabbitMQ 3.10 without the management plugin keeps no
                publish counters per vhost; `rabbitmqctl eval` reads the queue processes).
                Every publish is routed to a queue here (dramatiq's queues, delay queues,
                fulfilment.events.unrouted for events nobody binds), so this is the number
                of publishes, the publisher's submits included.

The benchmark's own statements (polling for progress) are tagged `/* bench */` by
CountingConnection and left out; its transactions are subtracted.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from tests.support import servers

# Backends flush their pg_stat_database counters at most every second, idle ones after 10 s.
SETTLE_SECONDS = 11.0
BENCH_TAG = "/* bench */ "
TOP_STATEMENTS = 15

_TX_STATEMENTS = ("BEGIN", "COMMIT", "ROLLBACK")


class CountingConnection(psycopg.Connection[Any]):
    """The benchmark's connection to a part's database: tags and counts the statements it sends,
    so that they can be told apart from the product's."""

    statements = 0

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.statements += 1
        if isinstance(query, str):
            query = BENCH_TAG + query
        return super().execute(query, *args, **kwargs)


def connect(dsn: str) -> CountingConnection:
    return CountingConnection.connect(dsn, autocommit=True)


# --- Postgres ------------------------------------------------------------------------------

def _admin() -> psycopg.Connection[Any]:
    return psycopg.connect(servers.pg_admin_dsn(), autocommit=True)


def statements_available() -> str | None:
    """None if pg_stat_statements can be read from the admin database, else why not."""
    try:
        with _admin() as conn:
            found = conn.execute("SELECT to_regclass('pg_stat_statements') IS NOT NULL").fetchone()
            if not found or not found[0]:
                return ("no pg_stat_statements in database fulfil: not in shared_preload_libraries, or "
                        "the extension not created")
            conn.execute("SELECT 1 FROM pg_stat_statements LIMIT 1")
    except psycopg.Error as error:
        return f"pg_stat_statements unreadable: {str(error).strip().splitlines()[0]}"
    return None


def statement_calls(database: str) -> dict[int, tuple[str, int]]:
    """queryid -> (query text, calls) of the top-level statements run in `database`."""
    with _admin() as conn:
        rows = conn.execute(
            """
            SELECT s.queryid, min(s.query), sum(s.calls)::bigint
              FROM pg_stat_statements AS s
              JOIN pg_database AS d ON d.oid = s.dbid
             WHERE d.datname = %s AND s.toplevel
             GROUP BY s.queryid
            """,
            (database,),
        ).fetchall()
    return {int(queryid): (str(query), int(calls)) for queryid, query, calls in rows}


DB_COUNTERS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted")


def database_counters(database: str) -> dict[str, int]:
    with _admin() as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(f"SELECT {', '.join(DB_COUNTERS)} FROM pg_stat_database WHERE datname = %s",
                           (database,)).fetchone()
    if row is None:
        raise RuntimeError(f"no pg_stat_database row for {database}")
    return dict(zip(DB_COUNTERS, (int(v) for v in row), strict=True))


def statements_delta(before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]]) -> dict[str, int]:
    """query text -> calls in between (the benchmark's own left out), most called first."""
    calls: dict[str, int] = {}
    for queryid, (query, total) in after.items():
        done = total - before.get(queryid, ("", 0))[1]
        if done > 0 and not query.startswith(BENCH_TAG):
            text = " ".join(query.split())
            calls[text] = calls.get(text, 0) + done
    return dict(sorted(calls.items(), key=lambda item: (-item[1], item[0])))


# --- RabbitMQ ------------------------------------------------------------------------------

_QUEUE_COUNT = re.compile(r'\{"([^"]*)",\s*(-?\d+)\}')


def enqueued_by_queue(vhost: str) -> dict[str, int]:
    """queue -> messages it took in since it was declared (its backing queue's next_seq_id)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", vhost):
        raise ValueError(f"unexpected vhost name {vhost!r}")
    expression = (
        "[{binary_to_list(element(4, N)), case BQ of L when is_list(L) -> "
        "proplists:get_value(next_seq_id, L, -1); _ -> -1 end} || "
        f'[{{name, N}}, {{backing_queue_status, BQ}}] <- rabbit_amqqueue:info_all(<<"{vhost}">>, '
        "[name, backing_queue_status])]."
    )
    return parse_queue_counts(servers.rabbitmqctl("eval", expression))


def parse_queue_counts(output: str) -> dict[str, int]:
    return {name: int(count) for name, count in _QUEUE_COUNT.findall(output)}


# --- A window around a timed batch -------------------------------------------------------

@dataclass
class Snapshot:
    statements: dict[int, tuple[str, int]] | None
    bench_statements: int
    queues: dict[str, int]
    database: dict[str, int] = field(default_factory=dict)


class CostWindow:
    """Snapshots of the servers' counters before and after a batch; `finish` gives per-purchase costs.

    Call `begin()` once the warm-up is done and its effects are out (the caller waits for its
    outbox), and `finish(purchases)` once the batch is done likewise.
    """

    def __init__(self, database: str, vhost: str, conn: CountingConnection, *,
                 settle_seconds: float = SETTLE_SECONDS) -> None:
        self.database = database
        self.vhost = vhost
        self.conn = conn
        self.settle_seconds = settle_seconds
        self.unavailable = statements_available()
        self.before: Snapshot | None = None
        self.failed: str | None = None  # a counter could not be read: no costs, the run still counts

    def _snapshot(self) -> Snapshot:
        return Snapshot(statements=None if self.unavailable else statement_calls(self.database),
                        bench_statements=self.conn.statements, queues=enqueued_by_queue(self.vhost))

    def begin(self) -> None:
        time.sleep(self.settle_seconds)  # the warm-up's transactions are all reported
        try:
            self.before = self._snapshot()
            self.before.database = database_counters(self.database)
        except (psycopg.Error, RuntimeError, OSError, subprocess.SubprocessError) as error:
            self.failed = f"{type(error).__name__}: {error}"

    def finish(self, purchases: int) -> dict[str, Any]:
        if self.before is None:
            return {"purchases": purchases, "unavailable": self.failed or "CostWindow.begin was not called"}
        try:
            after = self._snapshot()  # statements and queues count at once
            time.sleep(self.settle_seconds)
            bench_statements = self.conn.statements  # the bench's transactions, until the last snapshot
            after.database = database_counters(self.database)
        except (psycopg.Error, RuntimeError, OSError, subprocess.SubprocessError) as error:
            return {"purchases": purchases, "unavailable": f"{type(error).__name__}: {error}"}
        return per_purchase(self.before, after, purchases, bench_statements=bench_statements,
                            unavailable=self.unavailable, settle_seconds=self.settle_seconds)


def per_purchase(before: Snapshot, after: Snapshot, purchases: int, *, bench_statements: int,
                 unavailable: str | None, settle_seconds: float) -> dict[str, Any]:
    """The costs per purchase between two snapshots (pure: unit tested)."""
    def each(count: float) -> float:
        return round(count / purchases, 3)

    found: dict[str, Any] = {"purchases": purchases, "settle_seconds": settle_seconds}
    if before.statements is not None and after.statements is not None:
        calls = statements_delta(before.statements, after.statements)
        total = sum(calls.values())
        transaction_control = sum(n for query, n in calls.items() if query.upper().rstrip(";") in _TX_STATEMENTS)
        begins = sum(n for query, n in calls.items() if query.upper().rstrip(";") == "BEGIN")
        found.update(statements=each(total), statements_total=total,
                     statements_begin_commit_rollback=each(transaction_control), begins=each(begins),
                     top_statements=[{"per_purchase": each(n), "calls": n, "query": query[:300]}
                                     for query, n in list(calls.items())[:TOP_STATEMENTS]])
    else:
        found.update(statements=None, statements_unavailable=unavailable)
    own = bench_statements - before.bench_statements  # autocommit: one transaction each
    database = {key: after.database[key] - before.database[key] for key in DB_COUNTERS}
    transactions = database["xact_commit"] + database["xact_rollback"] - own
    if "begins" in found:
        # A transaction without a BEGIN is one autocommit statement, or a pool pre-ping: SQLAlchemy's
        # psycopg dialect pings with an empty query (";"), a round trip pg_stat_statements never sees.
        found["transactions_without_begin"] = round(transactions / purchases - found["begins"], 3)
    found.update(
        transactions=each(transactions),
        rollbacks=each(database["xact_rollback"]),
        rows_written=each(database["tup_inserted"] + database["tup_updated"] + database["tup_deleted"]),
        database_deltas={**database, "bench_own_transactions": own},
    )
    queues = {name: count - before.queues.get(name, 0) for name, count in after.queues.items()}
    if any(count < 0 for count in after.queues.values()):
        found.update(enqueued=None, enqueued_unavailable="a queue reported no next_seq_id")
    else:
        found.update(enqueued=each(sum(queues.values())),
                     enqueued_by_queue={name: each(n) for name, n in sorted(queues.items()) if n})
    return found
