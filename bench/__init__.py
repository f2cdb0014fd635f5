"""`python -m bench`: throughput, latency, scheduler cost and worker memory of ticket-fulfilment.

Parts (each on its own fresh database and RabbitMQ vhost, cleaned up afterwards):

  (a) raw dramatiq baseline   bench/raw_dramatiq.py (+ raw_broker.py, raw_actors.py)
  (b) the full pipeline       bench/pipeline.py
  (c) ratio (b)/(a)           from the medians of alternated repeats (bench/__main__.py)
  (d) scheduler tick cost     bench/scheduler_cost.py (+ history.py, plans.py)
  (e) worker memory (RSS)     bench/memory.py
  (f) open-loop latency       bench/latency.py (submissions at half and a quarter of (b)'s maximum)

(a) and (b) also report what a purchase costs the servers (bench/costs.py): database
statements and transactions, RabbitMQ messages, worker CPU.

Kept import-light: `dramatiq bench.raw_broker bench.raw_actors` imports this package too.
"""

# The raw baseline's queues: shared by bench/raw_actors.py (worker side) and bench/raw_dramatiq.py.
RAW_QUEUES = ("bench.raw1", "bench.raw2", "bench.raw3")
