"""Everything one sandbox instance owns, reachable from handlers as ``request.app.state.sandbox``."""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

from fulfilment.partners.sandbox_kit.clock import Clock, system_clock

from .accounts import AccountDirectory
from .catalogue import build_catalogue
from .config import RuntimeSettings, SandboxConfig
from .faults import FaultInjector
from .store import SandboxStore


class SandboxState:
    def __init__(self, config: SandboxConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or system_clock
        # Dates are anchored once, at start-up: a reset keeps the same catalogue.
        self.catalogue = build_catalogue(self.clock().date(), config.seats_per_row)
        self.accounts = AccountDirectory(config.partners)
        self.store = SandboxStore(
            self.catalogue, self.accounts, RuntimeSettings.from_config(config), self.clock, self._lifecycle_rng(),
            token_prefix=config.token_prefix,
        )
        self.faults = FaultInjector(config.faults, config.seed)
        self._requests_lock = threading.Lock()
        self._requests: Counter[str] = Counter()

    def _lifecycle_rng(self) -> random.Random:
        # A separate stream from the fault RNG, so enabling faults does not change order outcomes.
        return random.Random(self.config.seed + 1)

    def count_request(self, endpoint: str) -> None:
        with self._requests_lock:
            self._requests[endpoint] += 1

    def request_counts(self) -> dict[str, int]:
        with self._requests_lock:
            return dict(self._requests)

    def public_config(self) -> dict[str, Any]:
        return {
            **self.store.settings.to_json(),
            "seats_per_row": self.config.seats_per_row,
            "seed": self.config.seed,
            "admin_loopback_only": self.config.admin_loopback_only,
            "partners": [p.public() for p in self.accounts.all()],
        }

    def reset(self) -> None:
        """Back to the start-up state: no tokens/quotes/orders, full inventory, start-up settings,
        start-up fault rules, zeroed counters and re-seeded RNGs."""
        self.store.reset(RuntimeSettings.from_config(self.config), self._lifecycle_rng())
        self.faults.reset(self.config.faults, self.config.seed)
        with self._requests_lock:
            self._requests.clear()
