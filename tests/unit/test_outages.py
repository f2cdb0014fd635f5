"""A broker outage in a bounded log (fulfilment/outages.py): one line down, a summary a minute, one back."""

from __future__ import annotations

import logging

import pytest

from fulfilment import outages
from fulfilment.outages import Outage, QuietOutageLogs


def record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, (), None)


def test_an_outage_logs_one_line_down_a_summary_per_period_and_one_line_back(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(outages.time, "monotonic", lambda: clock[0])
    outage = Outage("broker (RabbitMQ)", summary_every=60)
    with caplog.at_level(logging.INFO, logger="fulfilment.outage"):
        outage.recovered()  # not down: nothing
        for _ in range(200):  # 200 attempts in 100 s
            outage.failed("ConnectionRefusedError: [Errno 111] Connection refused")
            clock[0] += 0.5
        outage.recovered()
        outage.recovered()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("broker (RabbitMQ) down: ConnectionRefusedError")
    assert lines[1].startswith("broker (RabbitMQ) still down after 60 s: 121 failed attempts")
    assert lines[2] == "broker (RabbitMQ) back after 100 s (200 failed attempts)"


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
