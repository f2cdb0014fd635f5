"""Fixtures for the TBB sandbox unit tests (helpers live in ``sandbox_testkit``)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

with warnings.catch_warnings():
    # starlette 1.x nudges towards "httpx2" on import; the TestClient works fine with httpx 0.28.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

from sandbox_testkit import FakeClock, Sandbox

from fulfilment.partners.tbb.sandbox import SandboxConfig, create_app


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_sandbox(clock: FakeClock) -> Iterator[Callable[..., Sandbox]]:
    clients: list[TestClient] = []

    def make(config: SandboxConfig | None = None, **overrides: Any) -> Sandbox:
        cfg = (config or SandboxConfig()).with_overrides(**overrides) if overrides else (config or SandboxConfig())
        client = TestClient(create_app(cfg, clock=clock))
        clients.append(client)
        return Sandbox(client, clock)

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox()
