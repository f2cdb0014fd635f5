"""Nightly maintenance ("niterun"): 00:00-02:00 in the EVENT's local time (contract), 503 20001.

Mode ``auto`` follows the event's timezone on the sandbox clock; the admin API can force ``on`` or
``off`` for every event or for one event (to test without waiting for midnight). Which calls are
refused: ``assumed.py`` (niterun section).
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from .assumed import NITERUN_END_HOUR, NITERUN_START_HOUR
from .catalogue import Event

MODES = ("auto", "on", "off")


def in_window(event: Event, now: datetime) -> bool:
    local = now.astimezone(event.zone)
    return NITERUN_START_HOUR <= local.hour < NITERUN_END_HOUR


class Niterun:
    def __init__(self, lock: threading.RLock, mode: str) -> None:
        self._lock = lock
        self._default = mode
        self._mode = mode
        self._per_event: dict[str, str] = {}

    def reset(self) -> None:
        with self._lock:
            self._mode = self._default
            self._per_event.clear()

    def set(self, mode: str, event_id: str | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}")
        with self._lock:
            if event_id is None:
                self._mode = mode
                self._per_event.clear()
            else:
                self._per_event[event_id] = mode

    def active(self, event: Event, now: datetime) -> bool:
        with self._lock:
            mode = self._per_event.get(event.id, self._mode)
        return mode == "on" or (mode == "auto" and in_window(event, now))

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"mode": self._mode, "per_event": dict(self._per_event)}
