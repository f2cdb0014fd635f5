"""Time for the sandbox: an injectable source clock plus an adjustable offset.

All instants are timezone-aware UTC ``datetime`` objects truncated to milliseconds. ``SandboxClock``
reads its source (the system clock, or a test's fake clock) and adds an offset that the admin API
sets (``PUT /admin/clock``) or moves (``POST /admin/clock/advance``), so hold expiry, quota windows,
polling waits, niterun and SafeTix delivery dates can be tested without sleeping.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def truncate_ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=(moment.microsecond // 1000) * 1000)


def system_clock() -> datetime:
    return truncate_ms(datetime.now(UTC))


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def iso_z(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    if utc.microsecond:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_utc(value: str) -> datetime | None:
    """An ISO-8601 instant WITH an offset (``Z`` or ``+02:00``); naive or malformed -> None."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return truncate_ms(parsed.astimezone(UTC))


class SandboxClock:
    """``source() + offset``; the offset is guarded by the sandbox's shared (re-entrant) state lock."""

    def __init__(self, source: Clock | None = None, start_at: datetime | None = None,
                 lock: threading.RLock | None = None) -> None:
        self._source: Clock = source or system_clock
        self._lock = lock or threading.RLock()
        self._initial_offset = timedelta(0) if start_at is None else start_at - self._source()
        self._offset = self._initial_offset

    def __call__(self) -> datetime:
        with self._lock:
            offset = self._offset
        return truncate_ms(self._source() + offset)

    def set(self, moment: datetime) -> None:
        with self._lock:
            self._offset = moment - self._source()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += timedelta(seconds=seconds)

    def reset(self) -> None:
        with self._lock:
            self._offset = self._initial_offset
