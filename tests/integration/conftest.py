"""Fixtures of the integration tests: real Postgres, RabbitMQ and the sandboxes over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fulfilment.flowkit.flow import Partners
from fulfilment.partners.registry import build_partners
from fulfilment.settings import get_settings
from tests.support import servers
from tests.support.tm_sandbox import TMSandboxProcess


@pytest.fixture(autouse=True)
def _configured(configured: dict[str, str]) -> None:
    """Every integration test runs against the test database, vhost and sandbox."""


@pytest.fixture
def tm(configured: dict[str, str], clean_tm_sandbox: TMSandboxProcess) -> Iterator[TMSandboxProcess]:
    yield clean_tm_sandbox


@pytest.fixture
def partners(configured: dict[str, str]) -> Iterator[Partners]:
    built = build_partners(get_settings())
    yield built
    built.close()


@pytest.fixture
def own_vhost(configured: dict[str, str]) -> Iterator[servers.TestVhost]:
    """A RabbitMQ vhost of the test's own (deleted after): no queue but those the test makes."""
    created = servers.create_vhost("fulfil_test_own")
    try:
        yield created
    finally:
        servers.delete_vhost(created)
