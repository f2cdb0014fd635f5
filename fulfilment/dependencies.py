"""Saying, in one line, which dependency could not be used: the database, the broker, the partner.

Operators (the CLI, `fulfil health`, the console) get "database at 127.0.0.1:5432 unreachable:
Connection refused", never a traceback and never a password: only the host and port of a URL
are named, and the reason is the innermost error's text, redacted.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from fulfilment.logging_setup import redact

DEFAULT_PORTS = {"postgresql": 5432, "amqp": 5672, "amqps": 5671, "http": 80, "https": 443}


# read_only_sql_transaction: the connection's server is (now) a standby, e.g. an old primary that
# Patroni demoted.  The connection is replaced (fulfilment/db.py); libpq's target_session_attrs=
# read-write then connects to the new primary.
NOT_PRIMARY_SQLSTATES = frozenset({"25006"})


class DependencyUnavailable(Exception):
    """A dependency could not be reached or refused us.  str() is the one line to show."""

    def __init__(self, what: str, where: str, reason: str, *, problem: str = "unreachable") -> None:
        super().__init__(f"{what} at {where} {problem}: {reason}")
        self.what = what
        self.where = where
        self.reason = reason


class BrokerUnavailable(RuntimeError):
    """RabbitMQ could not be reached or refused us; the message names the URL without its password.

    `reason` is the innermost cause alone (e.g. "ConnectionRefusedError: [Errno 111] Connection refused").
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


def is_database_unavailable(error: BaseException) -> bool:
    """True when Postgres cannot serve us right now: down, restarting, unreachable, the
    connection dropped, the pool exhausted, or an operational condition (disk full, admin
    shutdown, a deadlock).  Such failures pass: the request must wait, never be dropped
    (invariant 9).  Bad input and bugs are not this.  Explicit causes (`raise ... from`)
    are followed, so a wrapped outage still counts.
    """
    import psycopg
    from sqlalchemy import exc

    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, exc.DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, (exc.OperationalError, exc.InterfaceError, exc.TimeoutError)):
            return True  # TimeoutError: no pooled connection came free (sessions hung on a dead server)
        if isinstance(seen, (psycopg.OperationalError, psycopg.InterfaceError)):
            return True
        if isinstance(seen, psycopg.Error) and seen.sqlstate in NOT_PRIMARY_SQLSTATES:
            return True  # a server that became a standby (failover): the next connection finds the primary
        seen = seen.orig if isinstance(seen, exc.DBAPIError) and seen.orig is not None else seen.__cause__
    return False


def describe_database_error(error: BaseException) -> str:
    """One short line for operators: the driver's reason, without SQL, parameters or secrets."""
    from sqlalchemy import exc

    cause = error.orig if isinstance(error, exc.DBAPIError) and error.orig is not None else error
    text = " ".join(str(cause).split()) or type(cause).__name__
    return redact(f"{type(cause).__name__}: {text}")[:300]


def location(url: str) -> str:
    """host:port of a URL (or of each of several separated by ';', or of each `host=` of a
    multi-host database URL), never its credentials."""
    places = []
    for one in str(url).split(";"):
        try:
            split = urlsplit(one.strip())
            hosts = [value for key, value in parse_qsl(split.query) if key == "host"]
            if hosts and not split.hostname:
                places.extend(hosts)
                continue
            scheme = split.scheme.split("+", 1)[0]
            port = split.port or DEFAULT_PORTS.get(scheme)
            host = split.hostname or "localhost"
        except ValueError:
            places.append("<unparseable URL>")
            continue
        places.append(f"{host}:{port}" if port else host)
    return ", ".join(places)


def reason(error: BaseException) -> str:
    """The innermost error's text, on one line, redacted (pika nests the real cause in args)."""
    current = error
    seen = {id(current)}
    for _ in range(8):
        nested = next((arg for arg in current.args if isinstance(arg, BaseException)), None)
        held = getattr(current, "exception", None)  # pika's connection workflow errors hold it there
        nested = nested or (held if isinstance(held, BaseException) else None) or current.__cause__
        if nested is None or id(nested) in seen:
            break
        seen.add(id(nested))
        current = nested
    text = " ".join(str(current).split()).strip(" ,()")
    return redact(f"{type(current).__name__}: {text}" if text else type(current).__name__)[:300]


def database_unavailable(error: BaseException, url: str) -> DependencyUnavailable | None:
    """The error as "database at host:port unreachable", if it is an outage (not a bug or bad SQL)."""
    if isinstance(error, DependencyUnavailable):
        return error
    if not is_database_unavailable(error):
        return None
    return DependencyUnavailable("database", location(url), describe_database_error(error))


def broker_unavailable(error: BaseException, url: str) -> DependencyUnavailable | None:
    """The error as "broker (RabbitMQ) at host:port unreachable", if it is a connection problem."""
    import pika.exceptions
    from dramatiq.errors import BrokerConnectionError

    if isinstance(error, DependencyUnavailable):
        return error
    if isinstance(error, BrokerUnavailable):
        return DependencyUnavailable("broker (RabbitMQ)", location(url), error.reason or str(error))
    if isinstance(error, (pika.exceptions.AMQPConnectionError, pika.exceptions.ConnectionClosed,
                          pika.exceptions.StreamLostError, BrokerConnectionError, OSError)):
        return DependencyUnavailable("broker (RabbitMQ)", location(url), reason(error))
    return None


def partner_unavailable(error: BaseException, url: str) -> DependencyUnavailable:
    """A partner call that failed for want of the partner (network, 5xx, credentials)."""
    return DependencyUnavailable("partner API", location(url), reason(error))
