"""Fixtures shared by the integration and end-to-end suites (unit tests need none of them).

Real servers only: the local Postgres and RabbitMQ started by `scripts/services.sh`,
a fresh database and vhost per test run, and the TBB sandbox as a real HTTP server.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from tests.support import servers
from tests.support.sandbox import PARTNER_A, Sandbox
from tests.support.tm_sandbox import TMSandboxProcess

# Hypothesis profiles, chosen with HYPOTHESIS_PROFILE (default "ci"), loaded here, before any test
# module builds its settings: a test's own settings inherit every option it does not set itself.
#   ci    `make test`: the same examples on every run and machine (derandomized, no example
#         database), and a failure prints the blob for @reproduce_failure.
#   fuzz  `make fuzz`: random and many more examples (FUZZ_EXAMPLES, default 1000); failures are
#         kept in the local example database (.hypothesis/, ignored by git) and replayed first.
hypothesis_settings.register_profile("ci", max_examples=150, derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "1000")),
                                     derandomize=False, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))



@pytest.fixture(autouse=True)
def _no_outage_left_over() -> Iterator[None]:
    """An outage a test provoked in this process (fulfilment/outages.py) is not the next test's."""
    yield
    from fulfilment.outages import every_outage

    for outage in every_outage():
        outage.forget()


# Fast timings so that a purchase's whole life fits in seconds.
FAST_SETTINGS = {
    "TBB_CONNECT_TIMEOUT": "2",
    "TBB_READ_TIMEOUT": "5",
    "TBB_MAX_ATTEMPTS": "6",
    "TBB_MAX_RETRY_SECONDS": "8",
    "QUOTE_SAFETY_MARGIN_SECONDS": "1",
    "MAX_REQUOTES": "5",
    "CLAIM_LEASE_SECONDS": "15",
    "STEP_DEADLINE_SECONDS": "10",
    "MIN_DELIVERY_LEAD_SECONDS": "60",
    "ORDER_RESOLVE_MAX_INTERVAL_SECONDS": "5",
    "REDRIVE_AFTER_SECONDS": "3",
    "TRANSFER_POLL_SECONDS": "1",
    "TRANSFER_POLL_MIN_SECONDS": "0.3",
    "SCHEDULER_INTERVAL_SECONDS": "0.3",
    "ACTOR_MAX_RETRIES": "10",
    "ACTOR_MIN_BACKOFF_MS": "100",
    "ACTOR_MAX_BACKOFF_MS": "1000",
    "PAYMENT_PAUSE_SECONDS": "2",
    "LOG_LEVEL": "INFO",
}


@pytest.fixture(scope="session")
def local_servers() -> None:
    try:
        servers.require_servers()
    except servers.ServersNotRunning as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def database(local_servers: None) -> Iterator[servers.TestDatabase]:
    with servers.migrated_database() as db:
        yield db


@pytest.fixture(scope="session")
def vhost(local_servers: None) -> Iterator[servers.TestVhost]:
    created = servers.create_vhost()
    try:
        yield created
    finally:
        servers.delete_vhost(created)


@pytest.fixture(scope="session")
def log_dir() -> Path:
    path = Path(os.environ.get("FULFIL_TEST_LOG_DIR") or tempfile.mkdtemp(prefix="fulfil-test-logs-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def sandbox(log_dir: Path) -> Iterator[Sandbox]:
    server = Sandbox(
        env={"SANDBOX_TRANSFER_AFTER_SECONDS": "2", "SANDBOX_SEATS_PER_ROW": "100000", "SANDBOX_SEED": "7"},
        log_path=log_dir / "sandbox.log",
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tm_sandbox(log_dir: Path) -> Iterator[TMSandboxProcess]:
    """The Ticketmaster sandbox, a real HTTP server (carts held 60 s, no niterun, unless a test says otherwise)."""
    server = TMSandboxProcess(env={"TM_SANDBOX_HOLD_TIME_SECONDS": "60", "TM_SANDBOX_SEED": "7",
                                   # by the event's local time (auto), the result would depend on the hour
                                   "TM_SANDBOX_NITERUN": "off"},
                              log_path=log_dir / "tm-sandbox.log").start()
    yield server
    server.stop()


# Ticketmaster's settings in tests: the sandbox's apikey, the operator's billing identity, a key.
TM_TEST_SETTINGS = {
    "TM_ENABLED": "true",
    "TM_APIKEY": "tm-sandbox-apikey",
    "TM_CONNECT_TIMEOUT": "2",
    "TM_READ_TIMEOUT": "5",
    "TM_DEVICE_ID": "ticket-fulfilment-tests",
    "TM_MIN_HOLD_SECONDS": "5",
    "TM_BILLING_FIRST_NAME": "Tom",
    "TM_BILLING_LAST_NAME": "Brown",
    "TM_BILLING_EMAIL": "tickets@example.com",
    "TM_BILLING_PHONE": "4110001234",
    "TM_BILLING_ADDRESS_LINE1": "123 Main Street",
    "TM_BILLING_CITY": "Hollywood",
    "TM_BILLING_REGION": "CA",
    "TM_BILLING_POSTAL_CODE": "92806",
    "TM_PAYMENT_SOURCE": "request",  # each request carries its own nonce (factories.tm_request)
    "TM_PAYMENT_CIN": "123",
    "TICKET_KEY": "dGVzdHMtb25seS10aWNrZXQta2V5LTMyLWJ5dGVzISE=",
}


@pytest.fixture(scope="session")
def app_env(database: servers.TestDatabase, vhost: servers.TestVhost, sandbox: Sandbox, tm_sandbox: TMSandboxProcess,
            log_dir: Path) -> dict[str, str]:
    """The environment a worker, the scheduler and the CLI get in tests."""
    client_id, secret = PARTNER_A
    metrics_dir = log_dir / "prometheus"
    metrics_dir.mkdir(exist_ok=True)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "BROKER_", "TBB_", "TM_"))},
        **FAST_SETTINGS,
        **TM_TEST_SETTINGS,
        "TM_BASE_URL": f"{tm_sandbox.url}/partners/v1",
        "DATABASE_URL": database.url,
        "BROKER_URL": vhost.url,
        "TBB_BASE_URL": sandbox.url,
        "TBB_CLIENT_ID": client_id,
        "TBB_CLIENT_SECRET": secret,
        # Metrics servers on free loopback ports, so tests can run beside a demo.
        "METRICS_PORT": str(servers.free_port()),
        "dramatiq_prom_host": "127.0.0.1",
        "dramatiq_prom_port": str(servers.free_port()),
        "dramatiq_prom_db": str(metrics_dir),
    }


@contextmanager
def environment(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """This test process's settings (and partners) read from `env` for the block."""
    from fulfilment.partners.registry import get_partner, get_partners
    from fulfilment.settings import get_settings

    def forget() -> None:
        get_settings.cache_clear()
        get_partner.cache_clear()
        get_partners.cache_clear()

    saved = dict(os.environ)
    os.environ.update(env)
    forget()
    try:
        yield env
    finally:
        os.environ.clear()
        os.environ.update(saved)
        forget()


@pytest.fixture(scope="session")
def configured(app_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Point this test process's settings at the test servers too."""
    with environment(app_env):
        yield app_env


@pytest.fixture
def clean_tm_sandbox(tm_sandbox: TMSandboxProcess) -> Iterator[TMSandboxProcess]:
    """The TM sandbox as it started: no carts, orders, faults or clock moves of earlier tests."""
    tm_sandbox.admin.reset()
    yield tm_sandbox
    tm_sandbox.admin.reset()


@pytest.fixture
def clean_sandbox(sandbox: Sandbox) -> Iterator[Sandbox]:
    sandbox.clear_faults()
    yield sandbox
    sandbox.clear_faults()
