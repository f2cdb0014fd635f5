"""The TBB sandbox as a real server process, and a small client for its admin API."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx

from tests.support.sandbox_process import SandboxProcess

PARTNER_A = ("partner-a", "sandbox-secret-a")
PARTNER_B = ("partner-b", "sandbox-secret-b")
PARTNER_NOPAY = ("partner-nopay", "sandbox-secret-nopay")


class Sandbox(SandboxProcess):
    """``fulfil sandbox`` (the TBB sandbox) on a free loopback port; `admin` is its client."""

    def __init__(self, env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        super().__init__(env, log_path, "/tmp/fulfil-sandbox-{port}.log")
        self.admin = self.client

    def argv(self, port: int) -> list[str]:
        return [sys.executable, "-m", "fulfilment.cli", "sandbox", "--port", str(port)]

    # ---- admin API ---------------------------------------------------------------------------

    def _ok(self, response: httpx.Response) -> Any:
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self._ok(self.admin.post("/admin/reset"))

    def set_faults(self, rules: dict[str, Any]) -> None:
        self._ok(self.admin.put("/admin/faults", json=rules))

    def clear_faults(self) -> None:
        self._ok(self.admin.delete("/admin/faults"))

    def faults(self) -> Any:
        return self._ok(self.admin.get("/admin/faults"))

    def configure(self, **values: Any) -> Any:
        return self._ok(self.admin.patch("/admin/config", json=values))

    def orders(self, **filters: str) -> list[dict[str, Any]]:
        return self._ok(self.admin.get("/admin/orders", params=filters))["orders"]

    def quotes(self, **filters: str) -> list[dict[str, Any]]:
        return self._ok(self.admin.get("/admin/quotes", params=filters))["quotes"]

    def stats(self) -> Any:
        return self._ok(self.admin.get("/admin/stats"))

    def force_status(self, order_id: str, status: str) -> None:
        self._ok(self.admin.post(f"/admin/orders/{order_id}/status", json={"status": status}))
