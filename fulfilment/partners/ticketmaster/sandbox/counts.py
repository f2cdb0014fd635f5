"""Everything the admin API counts (``GET /admin/counts``), behind the shared state lock.

Totals (always present, 0 when nothing happened): ``commits_on_expired_carts``,
``commits_on_deleted_carts``, ``recommits`` (commit of a committed cart), ``commits_without_payment``,
``leaked_carts`` (held/paid carts that expired without a commit or delete), ``polls_before_wait``,
``polling_answers`` (202s served), ``rate_limited`` (429s served), ``niterun_refusals``,
``unauthorized`` (401s), ``concurrent_calls`` (overlapping cart calls), ``dropped_after_commit``,
``commits_processed_late`` (commits answered 5xx by a ``late_*`` fault that then took effect: at once
with ``late_ms`` 0, else later) and ``late_commits_failed`` (such commits that could no longer be
committed when their time came: nothing was done), ``nonces_reused`` (payments refused because
their nonce had paid before, ``one_time_nonces``), ``unavailable_refusals`` (503 20001 answered by
an ``unavailable_*`` fault, outside niterun), ``best_available_swaps`` (reserves that got another
section/row than they named, ``best_available_swap_rate``).

Keyed counts: ``orders_per_source_account`` (source_account_id, ``(none)`` when absent),
``concurrent_calls_per_cart``, ``rate_limited_per_apikey`` (the key's last 4 characters only),
``requests`` per endpoint, ``late_answers`` per endpoint (answers held back ``answer_after_ms``
after the work was done, see ``faults``), and ``securerender_calls`` per barcode: a list of ``{"at", "ok"}`` with
the sandbox clock's time of each call.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime
from typing import Any

from fulfilment.partners.sandbox_kit.clock import iso_z

TOTALS = (
    "commits_on_expired_carts", "commits_on_deleted_carts", "recommits", "commits_without_payment", "leaked_carts",
    "polls_before_wait", "polling_answers", "rate_limited", "niterun_refusals", "unauthorized", "concurrent_calls",
    "dropped_after_commit", "commits_processed_late", "late_commits_failed", "nonces_reused",
    "unavailable_refusals", "best_available_swaps",
)
KEYED = ("orders_per_source_account", "concurrent_calls_per_cart", "rate_limited_per_apikey", "requests",
         "late_answers")


def key_hint(apikey: str) -> str:
    """Never report an apikey: its last 4 characters are enough to tell keys apart."""
    return "..." + apikey[-4:]


class Counters:
    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._totals: Counter[str] = Counter()
        self._keyed: dict[str, Counter[str]] = {}
        self._securerender: dict[str, list[dict[str, Any]]] = {}

    def reset(self) -> None:
        with self._lock:
            self._totals.clear()
            self._keyed.clear()
            self._securerender.clear()

    def bump(self, name: str, key: str | None = None) -> None:
        assert name in TOTALS or name in KEYED, name
        with self._lock:
            if key is None:
                self._totals[name] += 1
            else:
                self._keyed.setdefault(name, Counter())[key] += 1

    def securerender_call(self, barcode: str, at: datetime, ok: bool) -> None:
        with self._lock:
            self._securerender.setdefault(barcode, []).append({"at": iso_z(at), "ok": ok})

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                **{name: self._totals[name] for name in TOTALS},
                **{name: dict(self._keyed.get(name, Counter())) for name in KEYED},
                "securerender_calls": {barcode: list(calls) for barcode, calls in self._securerender.items()},
            }
