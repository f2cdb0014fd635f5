"""In-flight calls per cart: the API does not support concurrent calls on one cart (seed 004).

A cart call (payment, commit, delete) enters before it does anything slow and leaves when its
answer is sent; a call that finds another one in flight on the same cart is a violation (counted by
the caller; policy in ``assumed.py``: reject with 409 20099, or only count).
"""

from __future__ import annotations

import threading
from collections import Counter


class CartCalls:
    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._in_flight: Counter[str] = Counter()

    def reset(self) -> None:
        with self._lock:
            self._in_flight.clear()

    def enter(self, cart_id: str, admit_overlap: bool) -> tuple[bool, bool]:
        """(overlapped, entered). A refused call (overlap, not admitted) must not ``leave``."""
        with self._lock:
            overlapped = self._in_flight[cart_id] > 0
            if overlapped and not admit_overlap:
                return True, False
            self._in_flight[cart_id] += 1
            return overlapped, True

    def leave(self, cart_id: str) -> None:
        with self._lock:
            self._in_flight[cart_id] -= 1
            if self._in_flight[cart_id] <= 0:
                del self._in_flight[cart_id]
