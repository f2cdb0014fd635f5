"""Time helpers shared by every sandbox module.

All instants are timezone-aware UTC ``datetime`` objects truncated to milliseconds. The clock is
injectable (``Clock``) so unit tests can move time forward without sleeping.

Rendering rule: ``2026-02-26T10:30:00Z`` when the instant has no sub-second part (the seed format),
``2026-02-26T10:30:00.250Z`` otherwise. Sub-second precision matters for the tiny TTLs used in tests
(a 1.5 s quote must advertise exactly when it dies), so a client must accept both forms, which any
ISO-8601 parser does.
"""

from __future__ import annotations

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


def iso_z(moment: datetime) -> str:
    """Render a UTC instant as ISO-8601 with a literal ``Z``."""
    utc = moment.astimezone(UTC)
    if utc.microsecond:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_utc(value: str) -> datetime | None:
    """Parse an ISO-8601 instant that carries an offset (``Z`` or ``+00:00``...).

    Naive values are refused (None): the contract says ``delivery_deadline`` is UTC, and guessing
    a zone for a naive value would hide a client bug.
    """
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return truncate_ms(parsed.astimezone(UTC))


def parse_date(value: str) -> date | None:
    """Parse ``YYYY-MM-DD`` (the discovery ``date_from``/``date_to`` format)."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None
