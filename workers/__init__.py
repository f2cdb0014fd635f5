"""Dramatiq workers: `dramatiq workers` (Procfile `worker:`) imports this package.

Importing it validates the settings, configures JSON logging, builds the RabbitMQ
broker (publisher confirms on) and declares the actors:

    purchases.intake    submit_purchase(request)      intake.py
    purchases.quote     quote_purchase(purchase_id)   quote.py
    purchases.order     place_order / resolve_order   order.py
    purchases.transfer  check_transfer(purchase_id)   transfer.py
    purchases.tickets   fetch_tickets(purchase_id)    tickets.py
"""

from __future__ import annotations

import os
import sys

from dramatiq.middleware.prometheus import DB_PATH

# Prometheus multiprocess mode must be chosen before prometheus_client is first imported,
# so that our metrics from every worker process are aggregated by dramatiq's exposition
# server, which reads DB_PATH (env dramatiq_prom_db).  Always that directory: dramatiq's
# middleware sets the same variable to it at process boot, after our metrics exist; a
# PROMETHEUS_MULTIPROC_DIR pointing elsewhere would hide them.  The server listens on
# dramatiq_prom_host:dramatiq_prom_port (dramatiq's defaults: 0.0.0.0:9191).
os.environ["PROMETHEUS_MULTIPROC_DIR"] = DB_PATH

from fulfilment import logging_setup, metrics
from fulfilment.settings import SettingsError, get_settings

try:
    _settings = get_settings()
except SettingsError as error:
    print(f"ticket-fulfilment worker cannot start: {error}", file=sys.stderr)
    raise SystemExit(2) from None

logging_setup.configure(_settings.log_level)

# Live gauges of worker processes killed without a clean exit (SIGKILL, OOM) would be exported
# for ever: dramatiq never clears the directory.
metrics.prune_dead_process_files(DB_PATH)

# Order matters: the broker must be set before the actor modules declare their actors on it.
from workers.broker import broker  # noqa: E402  (settings first: a bad config must stop us here)

# isort: split
from workers import intake, order, quote, tickets, transfer  # noqa: E402,F401  (declares the actors)
from workers.startup import check_at_start  # noqa: E402

# A queue of the other type (BROKER_QUEUE_TYPE) or a primary without a synchronous standby
# (SYNC_STANDBY_POLICY=require) stops the worker here with one line; an unreachable broker or
# database does not (the worker waits for them as it always has).
check_at_start(broker, _settings)

__all__ = ["broker"]
