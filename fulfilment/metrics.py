"""The product's own Prometheus metrics (dramatiq's middleware adds the worker ones)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PARTNER_CALL_SECONDS = Histogram(
    "fulfil_partner_call_seconds", "Latency of partner API calls", ["partner", "operation", "outcome"]
)
REQUOTES = Counter("fulfil_requotes_total", "Purchases sent back for a new quote", ["reason"])
TRANSITIONS = Counter("fulfil_transitions_total", "Purchase state changes", ["to_state"])


def observe_partner_call(operation: str, outcome: str, seconds: float) -> None:
    PARTNER_CALL_SECONDS.labels("tbb", operation, outcome).observe(seconds)
