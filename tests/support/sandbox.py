"""The TBB sandbox as a real server process, and a small client for its admin API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import REPO, free_port

PARTNER_A = ("partner-a", "sandbox-secret-a")
PARTNER_B = ("partner-b", "sandbox-secret-b")
PARTNER_NOPAY = ("partner-nopay", "sandbox-secret-nopay")


class Sandbox:
    def __init__(self, env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {**os.environ, **(env or {})}
        self._log_path = log_path or Path(f"/tmp/fulfil-sandbox-{self.port}.log")
        self.process: subprocess.Popen[bytes] | None = None
        self.admin = httpx.Client(base_url=self.url, timeout=10)

    def start(self) -> Sandbox:
        log = open(self._log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fulfilment.cli", "sandbox", "--port", str(self.port)],
            cwd=REPO, env=self._env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sandbox exited with {self.process.returncode}; see {self._log_path}")
            try:
                if self.admin.get("/healthz").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"sandbox did not answer /healthz within 30 s; see {self._log_path}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.admin.close()

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
