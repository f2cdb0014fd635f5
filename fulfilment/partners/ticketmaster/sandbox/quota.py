"""Per-apikey hourly quotas and the 429 headers (seed 004, public doc; windows ASSUMED, see assumed.py).

Every authenticated call consumes one unit of its apikey's quota in the current window; once the
window's quota is used up, calls answer 429 until the next window. The admin API can force 429s
with a chosen ``Ratelimit-Expiry`` (for one apikey or all) until the sandbox clock reaches it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fulfilment.partners.sandbox_kit.clock import epoch_ms

from .assumed import QUOTA_WINDOW_SECONDS
from .counts import key_hint

ALL_KEYS = "*"


@dataclass(frozen=True)
class QuotaDecision:
    allowed: int
    used: int
    expiry_ms: int
    limited: bool

    @property
    def available(self) -> int:
        return max(0, self.allowed - self.used)

    def headers(self) -> dict[str, str]:
        return {
            "Ratelimit-Quota-Allowed": str(self.allowed),
            "Ratelimit-Quota-Used": str(self.used),
            "Ratelimit-Quota-Available": str(self.available),
            "Ratelimit-Expiry": str(self.expiry_ms),
        }


def window_start(now: datetime) -> datetime:
    seconds = int(now.timestamp()) // QUOTA_WINDOW_SECONDS * QUOTA_WINDOW_SECONDS
    return datetime.fromtimestamp(seconds, tz=now.tzinfo)


class QuotaBook:
    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._window: datetime | None = None
        self._used: dict[str, int] = {}
        self._forced: dict[str, int] = {}  # apikey or ALL_KEYS -> Ratelimit-Expiry (epoch ms)

    def reset(self) -> None:
        with self._lock:
            self._window = None
            self._used.clear()
            self._forced.clear()

    def consume(self, apikey: str, now: datetime, allowed: int) -> QuotaDecision:
        with self._lock:
            start = window_start(now)
            if start != self._window:
                self._window = start
                self._used.clear()
            expiry = epoch_ms(start + timedelta(seconds=QUOTA_WINDOW_SECONDS))
            used = self._used.get(apikey, 0)
            forced = self._forced_expiry(apikey, now)
            if forced is not None:
                return QuotaDecision(allowed, max(used, allowed), forced, True)
            if used >= allowed:
                return QuotaDecision(allowed, used, expiry, True)
            self._used[apikey] = used + 1
            return QuotaDecision(allowed, used + 1, expiry, False)

    def _forced_expiry(self, apikey: str, now: datetime) -> int | None:
        now_ms = epoch_ms(now)
        for key in (apikey, ALL_KEYS):
            expiry = self._forced.get(key)
            if expiry is not None and now_ms >= expiry:
                del self._forced[key]
            elif expiry is not None:
                return expiry
        return None

    def force(self, expiry_ms: int, apikey: str | None = None) -> None:
        with self._lock:
            self._forced[apikey or ALL_KEYS] = expiry_ms

    def clear_forced(self) -> None:
        with self._lock:
            self._forced.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"window_start_ms": epoch_ms(self._window) if self._window else None,
                    "used": {key_hint(key): used for key, used in self._used.items()},
                    "forced": {(key if key == ALL_KEYS else key_hint(key)): expiry for key, expiry in self._forced.items()}}
