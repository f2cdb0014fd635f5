"""The raw dramatiq baseline: a chain of three actors, one Postgres UPDATE each.

`bench_chain` (created by bench/raw_dramatiq.py in the bench database) holds one row
per chain; step_one and step_two record their step and send the next actor, step_three
marks the row done.  Nothing else: no state machine, no history, no partner calls.
"""

from __future__ import annotations

import os

import dramatiq
from sqlalchemy import create_engine, text

from bench import RAW_QUEUES as QUEUES
from bench.raw_broker import broker  # sets the broker before the actors are declared

assert dramatiq.get_broker() is broker

# Pooled like fulfilment/db.py: one engine per process.
engine = create_engine(os.environ["BENCH_DATABASE_URL"], pool_pre_ping=True, pool_size=10, max_overflow=10)

STEP_SQL = text("UPDATE bench_chain SET step = :step, updated_at = clock_timestamp() WHERE id = :id")
DONE_SQL = text("UPDATE bench_chain SET step = 3, updated_at = clock_timestamp(), done_at = clock_timestamp() "
                "WHERE id = :id")


@dramatiq.actor(queue_name=QUEUES[0])
def step_one(chain_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(STEP_SQL, {"step": 1, "id": chain_id})
    step_two.send(chain_id)


@dramatiq.actor(queue_name=QUEUES[1])
def step_two(chain_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(STEP_SQL, {"step": 2, "id": chain_id})
    step_three.send(chain_id)


@dramatiq.actor(queue_name=QUEUES[2])
def step_three(chain_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(DONE_SQL, {"id": chain_id})
