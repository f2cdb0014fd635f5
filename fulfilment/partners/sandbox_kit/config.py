"""Configuration plumbing: the start-up configuration's overrides, and the runtime settings that an
admin ``PATCH /admin/config`` may change while the sandbox runs (``POST /admin/reset`` restores
them).  Each sandbox's ``config`` module lists its environment variables and knobs."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Generic, Self, TypeVar

SettingsT = TypeVar("SettingsT")


class Overridable:
    """A frozen dataclass configuration: ``with_overrides(**changes)`` is a validated copy."""

    def with_overrides(self, **overrides: Any) -> Self:
        return replace(self, **overrides)  # type: ignore[type-var]


def check_patch(patch: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """ValueError naming the keys of ``patch`` a PATCH may not change."""
    allowed = set(allowed)
    unknown = set(patch) - allowed
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}; allowed: {sorted(allowed)}")


class SettingsHolder(Generic[SettingsT]):
    """Holds a sandbox's current runtime settings under its lock (``settings``, ``replace_settings``)."""

    _lock: threading.Lock | threading.RLock
    _settings: SettingsT

    @property
    def settings(self) -> SettingsT:
        with self._lock:
            return self._settings

    def replace_settings(self, settings: SettingsT) -> None:
        with self._lock:
            self._settings = settings
