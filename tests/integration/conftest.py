import pytest


@pytest.fixture(autouse=True)
def _configured(configured: dict[str, str]) -> None:
    """Every integration test runs against the test database, vhost and sandbox."""
