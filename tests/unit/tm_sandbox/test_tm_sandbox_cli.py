"""`fulfil sandbox --partner ticketmaster` serves the Ticketmaster sandbox (a real process, over HTTP)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.servers import free_port
from tests.support.tm_sandbox import APIKEY, TEST_EVENT

FULFIL = Path(sys.executable).with_name("fulfil")


def test_fulfil_sandbox_serves_the_ticketmaster_api() -> None:
    port = free_port()
    process = subprocess.Popen([str(FULFIL), "sandbox", "--partner", "ticketmaster", "--port", str(port)],
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stderr.read() if process.stderr else "exited"
            assert time.monotonic() < deadline, "the sandbox did not answer within 20 s"
            time.sleep(0.1)
        refused = httpx.get(f"{base}/partners/v1/events/{TEST_EVENT}")
        assert refused.status_code == 401 and "error" in refused.json()
        event = httpx.get(f"{base}/partners/v1/events/{TEST_EVENT}", params={"apikey": APIKEY})
        assert event.status_code == 200, event.text
    finally:
        process.terminate()
        process.wait(timeout=10)
