"""Bulk-load a purchase history for the scheduler-cost benchmark, with INSERT ... SELECT generate_series.

Purchase i (1-based) is, by i % 100:
  0      live and due (1 %): received / quoted / ordering in turn, next_action_at in the last
         minute, no lease; its newest outbox event not yet published;
  1, 2   awaiting_transfer (2 %): next transfer check 2 to 3 hours ahead (none falls due while
         the benchmark runs), delivery deadline spread over the next 14 days (so some are
         inside the 24 h and 2 h warning windows);
  else   transfer_complete (97 %): no next action.
Each purchase has its full history (one purchase_transitions row per state it went
through, 1..5) and one outbox event per history row, published except as said above.
Ids are deterministic and ascending (purchase i, transition 5 i + k, event = transition), so
loading in stages (10k, then up to 100k, then 1M) appends to the same history, at the right
edge of every index.  As pg_restore does, the foreign keys are dropped for the load and added
back (validated) after it, with their exact definitions: the schema is the migrated one.
"""

from __future__ import annotations

import time

import psycopg

# One row per purchase in [lo, hi]: its kind, state, number of history steps and creation time.
_SOURCE = """
    SELECT i,
           ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid AS pid,
           CASE WHEN i % 100 = 0 THEN 'live' WHEN i % 100 IN (1, 2) THEN 'awaiting' ELSE 'complete' END AS kind,
           CASE WHEN i % 100 = 0 THEN 1 + (i / 100) % 3 WHEN i % 100 IN (1, 2) THEN 4 ELSE 5 END AS steps,
           CASE WHEN i % 100 IN (0, 1, 2) THEN now() - (i % 86400) * interval '1 second'
                ELSE now() - interval '3 days' - ((i::bigint * 7919) % 31536000) * interval '1 second' END AS created
      FROM generate_series({lo}::int, {hi}::int) AS i
"""

_PATH = "(ARRAY['received','quoted','ordering','awaiting_transfer','transfer_complete'])"

PURCHASES_SQL = f"""
INSERT INTO purchases (id, request_id, event_id, section_name, quantity, delivery_type, delivery_deadline,
                       state, state_changed_at, next_action_at, attempts, quotes_taken, quote_id, quote_expires_at,
                       order_id, order_status, transfer_email, seat_range, row_assigned, unit_price, subtotal,
                       created_at, updated_at)
SELECT pid, 'bench-' || i, '5496123', '101', 2, 'mobile_transfer',
       CASE kind WHEN 'awaiting' THEN now() + interval '1 hour' + ((i::bigint * 7919) % 20160) * interval '1 minute'
                 ELSE created + interval '3 days' END,
       {_PATH}[steps], created + (steps - 1) * interval '1 second',
       CASE kind WHEN 'live' THEN now() - (1 + i % 60) * interval '1 second'
                 WHEN 'awaiting' THEN now() + interval '2 hours' + (i % 3600) * interval '1 second' END,
       0, CASE WHEN steps >= 2 THEN 1 ELSE 0 END,
       CASE WHEN steps >= 2 THEN 'Q-' || i END, CASE WHEN steps >= 2 THEN now() + interval '1 hour' END,
       CASE WHEN steps >= 4 THEN 'TBB-B-' || i END,
       CASE steps WHEN 4 THEN 'awaiting_transfer' WHEN 5 THEN 'transfer_complete' END,
       CASE WHEN steps >= 4 THEN 'transfer-inbox-' || i || '@ticketbuyback.com' END,
       CASE WHEN steps >= 4 THEN (2 * (i % 1000) + 1) || '-' || (2 * (i % 1000) + 2) END,
       CASE WHEN steps >= 4 THEN 'A' END,
       CASE WHEN steps >= 2 THEN 175.00 END, CASE WHEN steps >= 2 THEN 350.00 END,
       created, created + (steps - 1) * interval '1 second'
  FROM ({_SOURCE}) AS s
"""

# (purchase, k) for every history step k < steps; transition id = 5 i + k.
_STEPS = f"""
    SELECT s.i, s.pid, s.kind, s.steps, k, 5 * s.i + k AS tid,
           {_PATH}[k + 1] AS to_state, CASE WHEN k > 0 THEN {_PATH}[k] END AS from_state,
           s.created + k * interval '1 second' AS at
      FROM ({_SOURCE}) AS s
      CROSS JOIN LATERAL generate_series(0, s.steps - 1) AS k
"""

TRANSITIONS_SQL = f"""
INSERT INTO purchase_transitions (id, kind, purchase_id, from_state, to_state, reason, attempt, message_id, created_at)
SELECT tid, 'transition', pid, from_state, to_state, 'bench history', 1, md5('message-' || tid), at
  FROM ({_STEPS}) AS t
"""

OUTBOX_SQL = f"""
INSERT INTO outbox_events (id, transition_id, purchase_id, routing_key, payload, created_at, published_at)
SELECT ('00000000-0000-4000-9000-' || lpad(to_hex(tid), 12, '0'))::uuid, tid, pid, 'purchase.' || to_state,
       jsonb_build_object(
           'event_id', '00000000-0000-4000-9000-' || lpad(to_hex(tid), 12, '0'), 'type', 'purchase.' || to_state,
           'occurred_at', to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
           'purchase_id', pid::text, 'request_id', 'bench-' || i, 'state', to_state, 'previous_state', from_state,
           'reason', 'bench history')
       || CASE WHEN k >= 3 THEN jsonb_build_object('order', jsonb_build_object(
              'order_id', 'TBB-B-' || i, 'status', to_state, 'transfer_email', 'transfer-inbox-' || i || '@ticketbuyback.com',
              'seat_range', '1-2', 'unit_price', '175.00')) ELSE '{{}}'::jsonb END,
       at,
       CASE WHEN kind = 'live' AND k = steps - 1 THEN NULL ELSE at + interval '1 second' END
  FROM ({_STEPS}) AS t
"""

# History rows written by the product during the benchmark (deadline flags) take ids from the
# sequence: start it above every id a later stage will load (5 i + k < 10^9).
SEQUENCE_SQL = """
SELECT setval(pg_get_serial_sequence('purchase_transitions', 'id'),
              greatest(1000000000, (SELECT max(id) FROM purchase_transitions)))
"""

TABLES = ("purchases", "purchase_transitions", "outbox_events", "deadline_flags")


FOREIGN_KEYS_SQL = """
SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
  FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace ORDER BY conname
"""


def load(dsn: str, lo: int, hi: int, *, statement_timeout_s: int = 1800) -> dict[str, float]:
    """Add purchases lo..hi (inclusive) with their history and events; then VACUUM (ANALYZE)."""
    timings: dict[str, float] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET statement_timeout = '{statement_timeout_s}s'")
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute("SET jit = off")  # generate_series row estimates are far off; JIT only costs here
        started = time.monotonic()
        with conn.transaction():
            foreign_keys = conn.execute(FOREIGN_KEYS_SQL).fetchall()
            for table, name, _ in foreign_keys:
                conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
            for name, sql in (("purchases", PURCHASES_SQL), ("transitions", TRANSITIONS_SQL),
                              ("outbox", OUTBOX_SQL)):
                step = time.monotonic()
                # No parameters: the bounds are formatted in (ints), so `%` stays the modulo operator.
                conn.execute(sql.replace("{lo}", str(int(lo))).replace("{hi}", str(int(hi))))
                timings[f"insert_{name}_s"] = round(time.monotonic() - step, 2)
            step = time.monotonic()
            for table, name, definition in foreign_keys:
                conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
            timings["foreign_keys_s"] = round(time.monotonic() - step, 2)
            conn.execute(SEQUENCE_SQL)
        timings["load_s"] = round(time.monotonic() - started, 2)
        started = time.monotonic()
        # VACUUM as autovacuum eventually would (hint bits, visibility map) and fresh statistics;
        # also keeps autovacuum from starting in the middle of the timed ticks.
        for table in TABLES:
            conn.execute(f"VACUUM (ANALYZE) {table}")
        timings["vacuum_analyze_s"] = round(time.monotonic() - started, 2)
    return timings


def counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        def scalar(sql: str) -> int:
            row = conn.execute(sql).fetchone()
            return int(row[0]) if row else 0

        found = {table: scalar(f"SELECT count(*) FROM {table}") for table in TABLES}
        found["unpublished_events"] = scalar("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")
        for state, count in conn.execute("SELECT state, count(*) FROM purchases GROUP BY state").fetchall():
            found[f"state:{state}"] = int(count)
    return found
