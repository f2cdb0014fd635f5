"""PAYMENT_NOT_CONFIGURED pauses purchases instead of burning them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.factories import request
from tests.support.pipeline import Pipeline, in_states, purchases, start_pipeline, wait_until
from tests.support.sandbox import PARTNER_NOPAY, Sandbox


@pytest.fixture(scope="module")
def pipeline(app_env: dict[str, str], log_dir: Path) -> Iterator[Pipeline]:
    client_id, secret = PARTNER_NOPAY
    env = {**app_env, "TBB_CLIENT_ID": client_id, "TBB_CLIENT_SECRET": secret, "PAYMENT_PAUSE_SECONDS": "1"}
    running = start_pipeline(env, log_dir, name="nopay")
    yield running
    running.stop()


def test_purchases_pause_and_keep_waiting_without_failing(pipeline: Pipeline, clean_sandbox: Sandbox) -> None:
    ids = [pipeline.submit(request()) for _ in range(3)]
    wait_until(ids, in_states("paused"), timeout=60, pipeline=pipeline)
    before = clean_sandbox.stats()["requests"].get("create_quote", 0)
    time.sleep(4)  # several pause periods: they are retried, never failed
    after = clean_sandbox.stats()["requests"].get("create_quote", 0)
    for purchase in purchases(ids).values():
        assert purchase.state == "paused"
        assert purchase.quotes_taken == 0
        assert "PAYMENT_NOT_CONFIGURED" in (purchase.last_error or "")
        assert purchase.failure_code is None
    assert after > before, "paused purchases are retried periodically"
