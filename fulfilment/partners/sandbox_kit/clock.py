"""Time for the sandboxes: UTC instants, their rendering and parsing, and an adjustable clock.

All instants are timezone-aware UTC ``datetime`` objects truncated to milliseconds. The clock is
injectable (``Clock``) so unit tests can move time forward without sleeping; ``SandboxClock`` reads
its source (the system clock, or a test's fake clock) and adds an offset that an admin API sets or
moves.

Rendering rule: ``2026-02-26T10:30:00Z`` when the instant has no sub-second part (the seed format),
``2026-02-26T10:30:00.250Z`` otherwise. Sub-second precision matters for the tiny TTLs used in tests
(a 1.5 s quote must advertise exactly when it dies), so a client must accept both forms, which any
ISO-8601 parser does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

Clock = Callable[[], datetime]


def truncate_ms(moment: datetime) -> datetime:
    """Drop sub-millisecond digits so what we store is exactly what we render."""
    return moment.replace(microsecond=(moment.microsecond // 1000) * 1000)


def system_clock() -> datetime:
    return truncate_ms(datetime.now(UTC))


def plus_seconds(moment: datetime, seconds: float) -> datetime:
    return truncate_ms(moment + timedelta(seconds=seconds))


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def iso_z(moment: datetime) -> str:
    """Render a UTC instant as ISO-8601 with a literal ``Z``."""
    utc = moment.astimezone(UTC)
    if utc.microsecond:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_utc(value: str) -> datetime | None:
    """Parse an ISO-8601 instant that carries an offset (``Z`` or ``+02:00``...); naive or malformed
    -> None.

    Naive values are refused: the partners' contracts say their instants are UTC, and guessing a
    zone for a naive value would hide a client bug.
    """
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return truncate_ms(parsed.astimezone(UTC))


def parse_date(value: str) -> date | None:
    """Parse ``YYYY-MM-DD``."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


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
