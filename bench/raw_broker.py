"""The broker of the raw dramatiq baseline: `dramatiq bench.raw_broker bench.raw_actors`.

Plain dramatiq: the default middleware, and publisher confirms on (as the product's
broker has them), reading BENCH_BROKER_URL.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

broker = RabbitmqBroker(url=os.environ["BENCH_BROKER_URL"], confirm_delivery=True)
dramatiq.set_broker(broker)
