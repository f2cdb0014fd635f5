"""A partner sandbox served by a process of its own on a free loopback port (the TBB sandbox:
tests/support/sandbox.py, Ticketmaster's: tests/support/tm_sandbox.py)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Self

import httpx

from tests.support.servers import REPO, free_port


class SandboxProcess:
    """`argv(port)` started in the repository with `env` on top of ours, its output in `log_path`;
    `client` talks to it.  `start()` returns once it answers ``GET /healthz`` (30 s at most)."""

    name = "sandbox"

    def __init__(self, env: dict[str, str] | None, log_path: Path | None, default_log: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {**os.environ, **(env or {})}
        self.log_path = log_path or Path(default_log.format(port=self.port))
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def argv(self, port: int) -> list[str]:
        raise NotImplementedError

    def start(self) -> Self:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv(self.port), cwd=REPO, env=self._env, stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            try:
                if self.client.get("/healthz").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer /healthz within 30 s; see {self.log_path}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.client.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
