"""`fulfil health`: can this process do its job right now?

Checks the database (and that migrations are applied), the broker, and partner
authentication.  Details are redacted: no password or token ever reaches the output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fulfilment.logging_setup import redact
from fulfilment.settings import Settings


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


class DatabaseDown(Exception):
    """Postgres cannot be reached or cannot serve (as opposed to, say, a schema behind the code)."""


def check_database(settings: Settings) -> str:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, text

    from fulfilment.dependencies import describe_database_error, is_database_unavailable
    from fulfilment.migrate import head_revision

    engine = create_engine(settings.database_url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            current = MigrationContext.configure(connection).get_current_revision()
    except Exception as error:
        if is_database_unavailable(error):
            from fulfilment.dependencies import location

            raise DatabaseDown(
                f"down: unreachable at {location(settings.database_url)}: {describe_database_error(error)[:240]} "
                "-- submitted requests wait in RabbitMQ; "
                "intake retries them until the database is back"
            ) from error
        raise
    finally:
        engine.dispose()
    head = head_revision()
    if current != head:
        raise RuntimeError(f"schema at {current or 'nothing'}, code expects {head}: run `fulfil migrate`")
    return f"reachable, schema at {current}"


class BrokerDown(Exception):
    """RabbitMQ cannot be reached or refused the connection."""


class PartnerDown(Exception):
    """The partner API cannot be reached or refused our credentials."""


def check_broker(settings: Settings) -> str:
    """Each node named in BROKER_URL on its own: healthy while one answers (the processes
    reconnect to a surviving node); the nodes down are named."""
    import pika

    from fulfilment.dependencies import broker_unavailable, location

    up, down = [], []
    for url in settings.broker_url.split(";"):
        try:
            parameters = pika.URLParameters(url)
            parameters.socket_timeout = 5
            parameters.blocked_connection_timeout = 5
            parameters.connection_attempts = 1
            connection = pika.BlockingConnection(parameters)
            try:
                connection.channel()
            finally:
                connection.close()
            up.append(location(url))
        except Exception as error:
            unavailable = broker_unavailable(error, url)
            if unavailable is None:
                raise
            down.append(f"{unavailable.where}: {unavailable.reason}")
    if not up:
        raise BrokerDown(f"unreachable at {'; '.join(down)}")
    nodes = f"{len(up)}/{len(up) + len(down)} nodes up" + (f", down: {'; '.join(down)}" if down else "")
    return f"reachable at {', '.join(up)} ({nodes}; queues {settings.broker_queue_type})"


def check_queue_leaders(settings: Settings) -> str:
    """Nodes running and the node leading each queue of the pipeline (RabbitMQ's management API,
    BROKER_MANAGEMENT_URL: fulfilment/rabbitmq/cluster.py). Fails when a quorum queue has no leader
    or a node of the cluster is down."""
    from fulfilment.rabbitmq.cluster import read_cluster
    from fulfilment.rabbitmq.queues import QUEUES, UNROUTED

    assert settings.broker_management_url is not None
    view = read_cluster(settings.broker_management_url, settings.broker_url)
    line = view.describe((*QUEUES, UNROUTED))
    leaderless = [q.name for q in view.queues.values() if q.type == "quorum" and q.name in (*QUEUES, UNROUTED)
                  and q.leader is None]
    if leaderless or len(view.running) < len(view.nodes):
        raise BrokerDown(line)
    return line


class NotDurable(Exception):
    """SYNC_STANDBY_POLICY=require and order intents are not on a synchronous standby."""


def check_replication(settings: Settings) -> str:
    """Postgres role, synchronous standby and lag (fulfilment/replication.py), judged by SYNC_STANDBY_POLICY."""
    from fulfilment.replication import DurabilityRefused, judge, read_state

    try:
        state = read_state(settings)
    except Exception as error:
        from fulfilment.dependencies import database_unavailable

        if database_unavailable(error, settings.database_url) is None:
            raise
        raise DatabaseDown("not checked: database unreachable") from None
    try:
        line = judge(state, settings.sync_standby_policy)
    except DurabilityRefused as error:
        raise NotDurable(str(error)) from None
    warning = "" if state.durable or settings.sync_standby_policy == "ignore" else "WARNING: "
    return f"{warning}{line}"


def check_tbb(settings: Settings) -> str:
    from fulfilment.dependencies import location, reason
    from fulfilment.partners.base import PartnerError
    from fulfilment.partners.registry import build_tbb

    client = build_tbb(settings)
    try:
        client.check_credentials()
    except PartnerError as error:
        raise PartnerDown(f"at {location(str(settings.tbb_base_url))}: {reason(error)}") from None
    finally:
        client.close()
    return f"authenticated as {settings.tbb_client_id}"


def check_ticketmaster(settings: Settings) -> str:
    """The apikey works where the core needs it most: the unredeemed-orders list that resolves an
    unknown commit (ASSUMED available to our apikey, partners/ticketmaster/assumed.py)."""
    import time

    from fulfilment.dependencies import location, reason
    from fulfilment.partners.base import PartnerError
    from fulfilment.partners.ticketmaster.api import TicketmasterApi

    assert settings.tm_base_url is not None and settings.tm_apikey is not None
    api = TicketmasterApi(str(settings.tm_base_url), settings.tm_apikey.get_secret_value(),
                          connect_timeout=settings.tm_connect_timeout, read_timeout=settings.tm_read_timeout)
    try:
        api.unredeemed_orders(1, request_id="health", deadline=time.monotonic() + 10)
    except PartnerError as error:
        raise PartnerDown(f"at {location(str(settings.tm_base_url))}: {reason(error)}") from None
    finally:
        api.close()
    return "apikey accepted (unredeemed orders readable)"


CHECKS: list[tuple[str, Callable[[Settings], str]]] = [
    ("database", check_database),
    ("broker", check_broker),
    ("replication", check_replication),
]
# One check per enabled partner, named after it.
PARTNER_CHECKS: dict[str, Callable[[Settings], str]] = {"tbb": check_tbb, "ticketmaster": check_ticketmaster}


def run_checks(settings: Settings) -> list[CheckResult]:
    results = []
    checks = list(CHECKS)
    if settings.broker_management_url:  # only the management API knows where each queue is led
        checks.insert(2, ("queue_leaders", check_queue_leaders))
    for name, check in [*checks, *((name, PARTNER_CHECKS[name]) for name in settings.enabled_partners)]:
        try:
            results.append(CheckResult(name, True, check(settings)))
        except Exception as error:  # noqa: BLE001  every failure is reported, none stops the others
            results.append(CheckResult(name, False, redact(f"{type(error).__name__}: {error}")[:500]))
    return results
