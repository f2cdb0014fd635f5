"""An outage in a bounded log (fulfilment/outages.py): one line down, a summary a minute (with the
purchases waiting), one back; for RabbitMQ, Postgres and the partners."""

from __future__ import annotations

import logging
import threading

import pytest

from fulfilment import outages
from fulfilment.outages import Outage, QuietOutageLogs


def record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, (), None)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """outages' monotonic clock, moved by the test: clock[0] += seconds."""
    now = [1000.0]
    monkeypatch.setattr(outages.time, "monotonic", lambda: now[0])
    return now


def test_an_outage_logs_one_line_down_a_summary_per_period_and_one_line_back(
    caplog: pytest.LogCaptureFixture, clock: list[float],
) -> None:
    outage = Outage("broker (RabbitMQ)", summary_every=60)
    with caplog.at_level(logging.INFO, logger="fulfilment.outage"):
        outage.recovered()  # not down: nothing
        for _ in range(200):  # 200 attempts in 100 s
            outage.failed("ConnectionRefusedError: [Errno 111] Connection refused", waiting=[])
            clock[0] += 0.5
        outage.recovered()
        outage.recovered()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("broker (RabbitMQ) down: ConnectionRefusedError")
    assert lines[1].startswith("broker (RabbitMQ) still down after 60 s: 121 failed attempts, 0 purchase(s) waiting")
    assert lines[2] == "broker (RabbitMQ) back after 100 s (200 failed attempts, 0 purchase(s) waited in this process)"


def test_the_filter_drops_pika_errors_and_consumer_restarts_and_counts_them(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = Outage("broker (RabbitMQ)")
    monkeypatch.setattr(outages, "BROKER", broker)
    quiet = QuietOutageLogs()
    consumer = "dramatiq.worker.ConsumerThread(purchases.quote)"
    # A restart after an unexpected error, the broker being up, is kept.
    assert quiet.filter(record(consumer, logging.INFO, "Restarting consumer in 3.00 seconds."))
    assert not quiet.filter(record("pika.adapters.utils.connection_workflow", logging.ERROR,
                                   "AMQPConnector - reporting failure: AMQPConnectorSocketConnectError"))
    assert not quiet.filter(record(consumer, logging.CRITICAL, "Consumer encountered a connection error: refused"))
    assert not quiet.filter(record(consumer, logging.INFO, "Restarting consumer in 3.00 seconds."))
    assert quiet.filter(record(consumer, logging.CRITICAL, "Consumer encountered an unexpected error."))
    assert quiet.filter(record("fulfilment.steps.quote", logging.WARNING, "anything else"))
    assert quiet.filter(record("pika.channel", logging.INFO, "pika's own info is not an outage"))
    assert broker.down
    broker.recovered()
    assert quiet.filter(record("pika.channel", logging.WARNING,
                               "Received remote Channel.Close (404): \"NOT_FOUND - no queue 'x'\""))
    assert not broker.down


def test_the_summary_counts_each_purchase_waiting_once_from_the_log_context_or_as_given(
    caplog: pytest.LogCaptureFixture, clock: list[float],
) -> None:
    from fulfilment.logging_setup import log_context

    outage = Outage("database (Postgres)", summary_every=60)
    with caplog.at_level(logging.INFO, logger="fulfilment.outage"):
        for i in range(30):  # three purchases and a request retried ten times each
            with log_context(purchase_id=f"p{i % 3}"):
                outage.failed("refused")
            with log_context(request_id="r1"):
                outage.failed("refused")
            clock[0] += 1
        outage.failed("re-drive waits", waiting=["p0", "p9"])  # the scheduler names what it could not send
        clock[0] += 31
        bare = threading.Thread(target=outage.failed, args=("refused",))  # a new thread: no log context
        bare.start()
        bare.join()  # counted as an attempt only
        outage.recovered()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "62 failed attempts, 5 purchase(s) waiting in this process" in lines[1]
    assert lines[2] == "database (Postgres) back after 61 s (62 failed attempts, 5 purchase(s) waited in this process)"


def test_a_partner_is_down_only_after_failed_attempts_in_a_row(caplog: pytest.LogCaptureFixture) -> None:
    partner = Outage("partner TBB", down_after=3)
    with caplog.at_level(logging.INFO, logger="fulfilment.outage"):
        partner.failed("503", waiting=[])
        partner.failed("503", waiting=[])
        partner.recovered()  # a blip retried successfully: no line of ours (the client logged each attempt)
        partner.failed("503", waiting=[])
        partner.failed("503", waiting=[])
        assert not partner.down and not caplog.records
        partner.failed("503", waiting=[])
        assert partner.down
        partner.recovered()
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "partner TBB down", "partner TBB back after 0 s (3 failed attempts, 0 purchase(s) waited in this process)"]


def failure(logger: str, message: str, error: BaseException) -> logging.LogRecord:
    try:
        raise error
    except BaseException as raised:  # noqa: BLE001
        entry = logging.LogRecord(logger, logging.ERROR, __file__, 1, message, (), (type(raised), raised,
                                                                                    raised.__traceback__))
    return entry


def test_the_filter_drops_failed_messages_and_pool_errors_of_an_unavailable_dependency(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg
    import sqlalchemy.exc

    from fulfilment.partners.base import TransientError

    database, broker = Outage("database (Postgres)"), Outage("broker (RabbitMQ)")
    monkeypatch.setattr(outages, "DATABASE", database)
    monkeypatch.setattr(outages, "BROKER", broker)
    quiet = QuietOutageLogs()
    refused = psycopg.OperationalError("connection failed: Connection refused")
    worker = "dramatiq.worker.WorkerThread"
    assert not quiet.filter(failure(worker, "Failed to process message check_transfer('p') with unhandled exception.",
                                    sqlalchemy.exc.OperationalError("SELECT 1", {}, refused)))
    assert not quiet.filter(failure("sqlalchemy.pool.impl.QueuePool", "Exception during reset or similar", refused))
    assert database.down and not broker.down
    # While an outage is on, dramatiq's per-retry line is dropped too; not otherwise.
    retrying = record("dramatiq.middleware.retries.Retries", logging.INFO, "Retrying message 'm' in 800 milliseconds.")
    assert not quiet.filter(retrying)
    database.recovered()
    assert quiet.filter(retrying)
    # An unexpected error keeps its line and traceback.
    assert quiet.filter(failure(worker, "Failed to process message x with unhandled exception.", KeyError("bug")))
    # A partner's transient failure raised by a client is not a database's; without a partner frame it is kept.
    assert quiet.filter(failure(worker, "Failed to process message x with unhandled exception.",
                                TransientError("SERVICE_UNAVAILABLE", "503")))


def test_a_partner_s_transient_failure_is_counted_on_that_partner(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx
    import respx

    from fulfilment.partners.base import TransientError
    from fulfilment.partners.tbb.client import TbbClient

    tbb = Outage("partner TBB", down_after=1)
    monkeypatch.setitem(outages.PARTNERS, "tbb", tbb)
    client = TbbClient("http://tbb.test", "id", "secret", max_attempts=1)
    try:
        with respx.mock:
            respx.post("http://tbb.test/v1/auth/token").mock(return_value=httpx.Response(503, json={}))
            with pytest.raises(TransientError) as raised:
                client.check_credentials()
    finally:
        client.close()
    error = raised.value
    assert outages._partner_of(error) == "tbb"
    assert not QuietOutageLogs().filter(failure("dramatiq.worker.WorkerThread", "Failed to process message x.", error))
    assert tbb.down


def test_a_step_s_error_raised_from_a_partner_failure_is_that_partner_s_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx
    import respx

    from fulfilment.partners.base import TransientError
    from fulfilment.partners.tbb.client import TbbClient

    tbb = Outage("partner TBB", down_after=1)
    monkeypatch.setitem(outages.PARTNERS, "tbb", tbb)

    class RetryLater(Exception):  # as fulfilment.steps.common raises it
        pass

    client = TbbClient("http://tbb.test", "id", "secret", max_attempts=1)
    try:
        with respx.mock:
            respx.post("http://tbb.test/v1/auth/token").mock(side_effect=httpx.ConnectError("refused"))
            try:
                client.check_credentials()
            except TransientError as error:
                step_error = RetryLater(str(error))
                step_error.__cause__ = error
    finally:
        client.close()
    assert not QuietOutageLogs().filter(failure("dramatiq.worker.WorkerThread", "Failed to process message x.",
                                                step_error))
    assert tbb.down


def test_pika_s_appended_stack_is_cut_from_the_line() -> None:
    line = outages._first_line(record("pika.adapters.base_connection", logging.ERROR,
                                      "_produce() failed: ConnectionResetError(104); Caller's stack: Traceback "
                                      "(most recent call last): File x"))
    assert line == "_produce() failed: ConnectionResetError(104)"


def test_any_registered_partner_gets_its_own_quiet_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    """outages.py names no partner: a partner's client registers its outage (retry_logger), and a
    transient failure raised under fulfilment/partners/<name>/ counts on that partner alone."""
    import logging

    from fulfilment.partners.base import TransientError
    from fulfilment.partners.retry_log import retry_logger

    monkeypatch.setattr(outages, "PARTNERS", dict(outages.PARTNERS))
    retry_logger("acme", "acme", logging.getLogger("acme"), title="Acme Tickets")
    acme = outages.PARTNERS["acme"]
    assert acme.what == "partner Acme Tickets" and outages.partner_outage("acme") is acme
    assert outages.partner_outage("acme", "Other title") is acme and acme.what == "partner Acme Tickets"
    # named without a title first (a metrics observer built before the client), titled later
    assert outages.partner_outage("zeta").what == "partner zeta"
    assert outages.partner_outage("zeta", "Zeta").what == "partner Zeta"

    # An error raised by code in the partner's folder (its client), as dramatiq logs it on failure.
    scope: dict[str, object] = {"TransientError": TransientError}
    exec(compile("def call():\n    raise TransientError('SERVICE_UNAVAILABLE', 'down', status=503)\n",
                 "/srv/app/fulfilment/partners/acme/client.py", "exec"), scope)
    try:
        scope["call"]()  # type: ignore[operator]
    except TransientError as raised:
        error = raised
    assert outages._partner_of(error) == "acme"
    for _ in range(outages.PARTNER_DOWN_AFTER):
        assert not QuietOutageLogs().filter(failure("dramatiq.worker.WorkerThread", "Failed to process message x.", error))
    assert acme.down and not outages.PARTNERS["zeta"].down  # that partner only
    acme.recovered()
