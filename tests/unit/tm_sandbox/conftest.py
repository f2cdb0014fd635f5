"""Shared fixtures of the TM sandbox's unit tests (older modules still define their own ``tm``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.tm_sandbox import InProcess


@pytest.fixture
def tm() -> Iterator[InProcess]:
    """A fresh sandbox in process, on a FakeClock at T0."""
    sandbox = InProcess()
    yield sandbox
    sandbox.close()
