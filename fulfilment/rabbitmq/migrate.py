"""`fulfil queues migrate`: move the pipeline's queues to the configured type (classic <-> quorum).

RabbitMQ cannot change a queue's type or arguments in place.  For each queue that exists with
arguments other than ours (its actor queue, `.DQ` and `.XQ`), this:

1. moves its messages into `<name>.migrating` (a plain durable queue), publishing each with
   confirms before acking it, so a crash duplicates a message at worst, never loses one (the
   actors are idempotent; duplicates are harmless);
2. deletes the emptied queue and declares it as configured;
3. moves the messages back and deletes `<name>.migrating`.

The unrouted-events queue (fulfilment/rabbitmq/outbox.py) is migrated the same way when its
arguments are given (its type, as BROKER_QUEUE_TYPE, and its bound), and bound again to its
exchange; its events' TTL counts again from the move.

Run it with the workers and the scheduler stopped: a queue with consumers is refused.  An
interrupted run is finished by running it again (a `.migrating` queue left behind is emptied
into its queue).  Message bodies and properties (headers, x-death) are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from fulfilment.rabbitmq.broker import declarations, node_parameters
from fulfilment.rabbitmq.queues import QUEUES, UNROUTED

log = logging.getLogger("fulfilment.rabbitmq.migrate")

HOLDING_SUFFIX = ".migrating"


class QueueInUse(RuntimeError):
    """A queue to migrate has consumers: the workers (or the scheduler) are still running."""


@dataclass
class MigrationReport:
    migrated: dict[str, int] = field(default_factory=dict)  # queue -> messages moved
    already: list[str] = field(default_factory=list)  # declared as configured already
    absent: list[str] = field(default_factory=list)  # not declared yet (workers will)
    dry_run: bool = False


def migrate_queues(broker_url: str, *, queue_type: str, delivery_limit: int,
                   queues: tuple[str, ...] = QUEUES, dry_run: bool = False,
                   unrouted: dict[str, Any] | None = None) -> MigrationReport:
    """`unrouted`: the arguments of the unrouted-events queue (outbox.unrouted_arguments), to migrate it too."""
    report = MigrationReport(dry_run=dry_run)
    connection = pika.BlockingConnection(node_parameters(broker_url))
    try:
        for queue in queues:
            for name, arguments in declarations(queue, queue_type=queue_type, delivery_limit=delivery_limit):
                _migrate_one(connection, name, arguments, report)
        if unrouted is not None:
            _migrate_one(connection, UNROUTED, unrouted, report)
            if UNROUTED in report.migrated and not dry_run:  # deleting it removed its binding
                _on_channel(connection, lambda channel: channel.queue_bind(UNROUTED, UNROUTED), missing=404)
    finally:
        if connection.is_open:
            connection.close()
    return report


def _migrate_one(connection: BlockingConnection, name: str, arguments: dict[str, Any],
                 report: MigrationReport) -> None:
    holding = name + HOLDING_SUFFIX
    state = _passive(connection, name)
    held = _passive(connection, holding)
    if state is None and held is None:
        report.absent.append(name)
        return
    if state is not None and _declares(connection, name, arguments):
        if held is None:
            report.already.append(name)
            return
        # An interrupted run: the queue was re-declared, its messages wait in the holding queue.
    elif report.dry_run:
        report.migrated[name] = state[0] if state else 0
        return
    elif state is not None:
        if state[1]:
            raise QueueInUse(f"queue {name!r} has {state[1]} consumer(s): stop the workers and the scheduler first")
        _declare(connection, holding, {})
        _move(connection, name, holding)
        _delete(connection, name)
        _declare(connection, name, arguments)
    if report.dry_run:
        report.migrated[name] = (held or (0, 0))[0]
        return
    moved = _move(connection, holding, name)
    _delete(connection, holding)
    report.migrated[name] = moved
    log.info("queue %s declared as configured, %d message(s) moved", name, moved)


def _passive(connection: BlockingConnection, name: str) -> tuple[int, int] | None:
    """(messages, consumers) of a queue, or None if it does not exist."""
    return _on_channel(connection, lambda channel: _counts(channel.queue_declare(name, passive=True)),
                       missing=404)


def _counts(ok: Any) -> tuple[int, int]:
    return int(ok.method.message_count), int(ok.method.consumer_count)


def _declares(connection: BlockingConnection, name: str, arguments: dict[str, Any]) -> bool:
    """True if declaring `name` with `arguments` is accepted (it exists as configured)."""
    declared = _on_channel(connection, lambda channel: channel.queue_declare(name, durable=True, arguments=arguments),
                           missing=406)
    return declared is not None


def _declare(connection: BlockingConnection, name: str, arguments: dict[str, Any]) -> None:
    _on_channel(connection, lambda channel: channel.queue_declare(name, durable=True, arguments=arguments))


def _delete(connection: BlockingConnection, name: str) -> None:
    _on_channel(connection, lambda channel: channel.queue_delete(name, if_empty=True))


def _on_channel(connection: BlockingConnection, call: Callable[[BlockingChannel], Any],
                missing: int | None = None) -> Any:
    """`call` on a channel of its own (a refused declare closes its channel); None when refused with `missing`."""
    channel = connection.channel()
    try:
        return call(channel)
    except pika.exceptions.ChannelClosedByBroker as error:
        if missing is not None and error.reply_code == missing:
            return None
        raise
    finally:
        if channel.is_open:
            channel.close()


def _move(connection: BlockingConnection, source: str, target: str) -> int:
    """Every message of `source` into `target`: published with confirms, then acked.  Returns the count."""
    channel = connection.channel()
    channel.confirm_delivery()
    moved = 0
    try:
        while True:
            method, properties, body = channel.basic_get(source, auto_ack=False)
            if method is None:
                return moved
            channel.basic_publish("", target, body, properties, mandatory=True)
            channel.basic_ack(method.delivery_tag)
            moved += 1
    finally:
        if channel.is_open:
            channel.close()
