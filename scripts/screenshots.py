"""Regenerate the console screenshots in docs/screenshots/ (README, "Web console").

    .venv/bin/python scripts/screenshots.py

Runs the browser test (tests/e2e/test_console_browser.py: real console, workers, scheduler,
sandbox, Postgres and RabbitMQ, Debian's headless Chromium) with FULFIL_SCREENSHOT_DIR pointing
at docs/screenshots; starts the local Postgres and RabbitMQ first (scripts/services.sh).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "screenshots"


def main() -> int:
    subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "start"], check=True)
    TARGET.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FULFIL_SCREENSHOT_DIR": str(TARGET)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/e2e/test_console_browser.py"], cwd=ROOT,
                            env=env)
    if result.returncode == 0:
        for path in sorted(TARGET.glob("*.png")):
            print(f"{path.relative_to(ROOT)}  {path.stat().st_size // 1024} KiB")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
