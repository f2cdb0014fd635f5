"""Everything one sandbox instance owns, reachable from handlers as ``request.app.state.sandbox``.

ONE ``threading.RLock`` guards all mutable state: it is handed to the clock (its offset), the store,
the counters, the polling book, the quota book, niterun, the fault book, the in-flight cart
calls and the late commits, and each of their public methods takes it (re-entrant, so they may call each other). Nothing
awaits while holding it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from fulfilment.partners.sandbox_kit.clock import Clock, SandboxClock, iso_z

from .catalogue import build_catalogue
from .config import RuntimeSettings, SandboxConfig
from .counts import Counters, key_hint
from .faults import FaultBook
from .inflight import CartCalls
from .late import LateCommits
from .niterun import Niterun
from .polling import PollingBook
from .quota import QuotaBook
from .store import SandboxStore


class SandboxState:
    def __init__(self, config: SandboxConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.clock = SandboxClock(clock, config.clock_start, self.lock)
        # Event dates are anchored once, at start-up: a reset keeps the same catalogue.
        self.catalogue = build_catalogue(self.clock(), seats_per_row=config.seats_per_row)
        self.counters = Counters(self.lock)
        self.store = SandboxStore(self.catalogue, RuntimeSettings.from_config(config), self.clock, self.lock,
                                  self.counters, config.seed)
        self.polling = PollingBook(self.lock, config.seed)
        self.quota = QuotaBook(self.lock)
        self.niterun = Niterun(self.lock, config.niterun_mode)
        self.faults = FaultBook(self.lock, config.faults, config.seed)
        self.cart_calls = CartCalls(self.lock)
        self.late_commits = LateCommits(self.lock, self.store, self.faults, self.counters)
        self.check_events(self.store.settings)

    def check_events(self, settings: RuntimeSettings) -> None:
        """Settings that name events (``safetix_delays``, ``empty_barcode_events``) must name seeded ones
        (or ``*``)."""
        known = {event.id for event in self.catalogue.events} | {"*"}
        for name, named in (("safetix_delays", settings.safetix_delays),
                            ("empty_barcode_events", settings.empty_barcode_events)):
            unknown = sorted(set(named) - known)
            if unknown:
                raise ValueError(f"{name} names events the catalogue does not have: {unknown}")

    def patch_settings(self, patch: Mapping[str, Any]) -> None:
        """``PATCH /admin/config``: all or nothing (ValueError names the offending key)."""
        settings = self.store.settings.patched(patch)
        self.check_events(settings)
        self.store.replace_settings(settings)

    @property
    def settings(self) -> RuntimeSettings:
        return self.store.settings

    def public_config(self) -> dict[str, Any]:
        settings = self.settings.to_json()
        settings["apikeys"] = [key_hint(k) for k in settings["apikeys"]]  # never echo a key in full
        return {**settings, "seed": self.config.seed, "admin_loopback_only": self.config.admin_loopback_only,
                "clock": iso_z(self.clock()), "niterun": self.niterun.snapshot()}

    def reset(self) -> None:
        """Back to the start-up state: no carts/orders/polling jobs, full inventory, start-up settings,
        faults, niterun mode and clock offset, zeroed counters and quotas, re-seeded RNGs; pending
        late commits never take effect."""
        with self.lock:
            self.late_commits.reset()
            self.clock.reset()
            self.store.reset(RuntimeSettings.from_config(self.config))
            self.polling.reset(self.config.seed)
            self.quota.reset()
            self.niterun.reset()
            self.faults.reset(self.config.faults, self.config.seed)
            self.cart_calls.reset()
            self.counters.reset()
