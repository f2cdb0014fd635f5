"""The raw dramatiq baseline: a chain of three actors, one Postgres UPDATE each.

`bench_chain` (created by bench/raw_dramatiq.py in the bench database) holds one row
per chain; step_one and step_two record their step and send the next actor, step_three
marks the row done.  Nothing else: no state machine, no history, no partner calls.

With BENCH_PARTNER_URL set (part g, "the floor"), step_one also asks the sandbox for a quote
and step_two orders it, with the product's partner client: the work no pipeline can avoid,
so the pipeline's throughput over this one says what the rest (ours) costs.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Any

import dramatiq
from sqlalchemy import create_engine, text

from bench import RAW_QUEUES as QUEUES
from bench.raw_broker import broker  # sets the broker before the actors are declared

assert dramatiq.get_broker() is broker

# Pooled like fulfilment/db.py: one engine per process.
engine = create_engine(os.environ["BENCH_DATABASE_URL"], pool_pre_ping=True, pool_size=10, max_overflow=10)

PARTNER_URL = os.environ.get("BENCH_PARTNER_URL")
partner: Any = None
if PARTNER_URL:
    from fulfilment.partners.tbb import TbbClient
    from tests.support.sandbox import PARTNER_A

    partner = TbbClient(PARTNER_URL, PARTNER_A[0], PARTNER_A[1], connect_timeout=5, read_timeout=10,
                        max_attempts=3, max_retry_seconds=5)


def _quote(chain_id: int) -> str | None:
    if partner is None:
        return None
    from fulfilment.partners.base import QuoteRequest

    quote = partner.create_quote(QuoteRequest("5496123", "101", None, 2), request_id=f"floor-q-{chain_id}",
                                 deadline=time.monotonic() + 10)
    return str(quote.quote_id)


def _order(chain_id: int, quote_id: str | None) -> None:
    if partner is None or quote_id is None:
        return
    partner.create_order(quote_id, delivery_type="mobile_transfer",
                         delivery_deadline=dt.datetime.now(dt.UTC) + dt.timedelta(days=3),
                         request_id=f"floor-o-{chain_id}", deadline=time.monotonic() + 10)


STEP_SQL = text("UPDATE bench_chain SET step = :step, updated_at = clock_timestamp() WHERE id = :id")
DONE_SQL = text("UPDATE bench_chain SET step = 3, updated_at = clock_timestamp(), done_at = clock_timestamp() "
                "WHERE id = :id")


@dramatiq.actor(queue_name=QUEUES[0])
def step_one(chain_id: int) -> None:
    quote_id = _quote(chain_id)
    with engine.begin() as conn:
        conn.execute(STEP_SQL, {"step": 1, "id": chain_id})
    step_two.send(chain_id, quote_id)


@dramatiq.actor(queue_name=QUEUES[1])
def step_two(chain_id: int, quote_id: str | None = None) -> None:
    _order(chain_id, quote_id)
    with engine.begin() as conn:
        conn.execute(STEP_SQL, {"step": 2, "id": chain_id})
    step_three.send(chain_id)


@dramatiq.actor(queue_name=QUEUES[2])
def step_three(chain_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(DONE_SQL, {"id": chain_id})
