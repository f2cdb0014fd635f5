"""Inspect, replay and purge the dramatiq dead-letter queues (`<queue>.XQ`) on RabbitMQ.

A message whose retries are exhausted is nacked without requeue by the worker, and
RabbitMQ dead-letters it into `<queue>.XQ`, where it expires after 7 days
(dramatiq's `DEAD_MESSAGE_TTL`).  This module lets an operator see what is there and
put it back to work, without ever losing a message:

* Listing reads with `basic_get` without acking and then closes the channel, so
  RabbitMQ requeues every message at its place (flagged `redelivered`, which is
  harmless).  Each queue is read at most `message_count` times, so no message is seen
  twice even though nothing is acked.
* Replay publishes a cleaned copy persistently, with publisher confirms and
  `mandatory=True`, and only acks the dead copy once RabbitMQ has confirmed the new
  one.  An interruption between the two leaves a duplicate (our actors are
  idempotent), never a loss.
* Anything not selected is simply never acked, and goes back when the channel closes.

Bodies that are not dramatiq messages at all (garbage from a foreign publisher) are
listed with their raw bytes, refused by replay with a reason, and removed by purge.  Each
has a key of its own (`DeadLetter.key`: `raw-` and a digest of its queue and bytes), which
selects it wherever a message id does (`fulfil dlq show|purge`, the console's page for it).

Broker URLs may carry a password: it never appears in an exception or log line here.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pika
import pika.exceptions
from dramatiq.common import q_name, xq_name
from dramatiq.message import Message, get_encoder
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from fulfilment.dependencies import BrokerUnavailable
from fulfilment.rabbitmq.queues import QUEUES

log = logging.getLogger(__name__)


# Options that describe one failed life of the message; a replay starts a fresh one.
# `redis_message_id` is the Redis broker's bookkeeping and means nothing here.
RESET_OPTIONS = frozenset({"retries", "traceback", "eta", "requeue_timestamp", "redis_message_id"})

# The fields of dramatiq's `Message` and the JSON types they must have to be replayable.
_MESSAGE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "queue_name": str,
    "actor_name": str,
    "args": list,
    "kwargs": dict,
    "options": dict,
    "message_id": str,
    "message_timestamp": int,
}

RAW_PREVIEW_BYTES = 80


@dataclass(frozen=True)
class DeadLetter:
    queue: str  # canonical queue, e.g. "purchases.quote"
    message_id: str | None
    actor: str | None
    purchase_id: str | None  # args[0] when it is a string (purchase actors)
    request_id: str | None  # args[0]["request_id"] when args[0] is a dict (intake)
    error: str | None  # last non-empty line of options["traceback"]
    retries: int
    age_seconds: float | None  # now - message_timestamp (or requeue_timestamp if later)
    body: dict[str, Any] | None  # the decoded message, None if undecodable
    raw: bytes  # the raw body

    @property
    def decodable(self) -> bool:
        return self.body is not None

    @property
    def key(self) -> str:
        """What selects this message: its message_id if it is a dramatiq message, else `raw-` and 16 hex
        digits of the SHA-256 of its queue and raw body (identical garbage in one queue shares a key)."""
        if self.body is not None and self.message_id:
            return self.message_id
        return raw_key(self.queue, self.raw)


def raw_key(queue: str, raw: bytes) -> str:
    return "raw-" + hashlib.sha256(queue.encode() + b"\0" + raw).hexdigest()[:16]


@dataclass
class ReplayReport:
    replayed: list[DeadLetter] = field(default_factory=list)
    skipped: list[tuple[DeadLetter, str]] = field(default_factory=list)
    dry_run: bool = False


# --------------------------------------------------------------------------- public API


def list_dead_letters(broker_url: str, queues: Iterable[str] = QUEUES) -> list[DeadLetter]:
    """Every dead message in the given queues' XQs, oldest first per queue; nothing is removed."""
    found: list[DeadLetter] = []
    with _connection(broker_url) as connection:
        for queue in queues:
            with _dead_channel(connection) as channel:
                found.extend(letter for _tag, letter in _read_xq(channel, queue))
    return found


def find(broker_url: str, message_id: str, queues: Iterable[str] = QUEUES) -> DeadLetter | None:
    """The dead message with this id or key (`DeadLetter.key`), if it is still in an XQ (they expire after 7 days)."""
    return next((letter for letter in list_dead_letters(broker_url, queues) if _is(letter, message_id)), None)


def _is(letter: DeadLetter, ident: str) -> bool:
    return letter.message_id == ident or letter.key == ident


def replay(
    broker_url: str,
    *,
    message_id: str | None = None,
    actor: str | None = None,
    all: bool = False,
    dry_run: bool = False,
    before_publish: Callable[[DeadLetter], None] | None = None,
    queues: Iterable[str] = QUEUES,
) -> ReplayReport:
    """Send the selected dead messages back to their queue as fresh messages (same message_id).

    The dead copy is acked only after RabbitMQ has confirmed the new one.  A message is
    skipped, and its dead copy left in place, when its body is not a dramatiq message,
    when `before_publish` raises (the caller could not make it safe to run again), or
    when RabbitMQ refuses the publish.  A second dead copy of a message already
    replayed in this run is skipped too, so one run never publishes a message twice.
    In a dry run nothing is published, acked, or handed to `before_publish`.
    """
    selected = _selector(message_id=message_id, actor=actor, everything=all)
    report = ReplayReport(dry_run=dry_run)
    replayed_ids: set[str] = set()
    with _connection(broker_url) as connection:
        publisher = None if dry_run else _Publisher(connection)
        for queue in queues:
            with _dead_channel(connection) as channel:
                for tag, letter in _read_xq(channel, queue):
                    if not selected(letter):
                        continue
                    reason = _refusal(letter, replayed_ids)
                    if reason is None and publisher is not None:
                        reason = _replay_one(channel, tag, letter, publisher, before_publish)
                    if reason is not None:
                        report.skipped.append((letter, reason))
                        continue
                    report.replayed.append(letter)
                    replayed_ids.add(str(letter.message_id))
    return report


def purge(
    broker_url: str,
    *,
    message_id: str | None = None,
    actor: str | None = None,
    all: bool = False,
    queues: Iterable[str] = QUEUES,
) -> int:
    """Delete the selected dead messages for good; returns how many were removed.

    `message_id` is a message id or a key (`DeadLetter.key`): an undecodable body is removed by its key.
    """
    selected = _selector(message_id=message_id, actor=actor, everything=all)
    removed = 0
    with _connection(broker_url) as connection:
        for queue in queues:
            with _dead_channel(connection) as channel:
                for tag, letter in _read_xq(channel, queue):
                    if selected(letter):
                        _ack_dead_copy(channel, tag)
                        log.info("purged dead message %s (%s) from %s", letter.message_id, letter.actor, xq_name(queue))
                        removed += 1
    return removed


def raw_preview(letter: DeadLetter, limit: int = RAW_PREVIEW_BYTES) -> str:
    """The start of the raw body, printable whatever bytes it holds (for listing garbage)."""
    text = repr(letter.raw[:limit])
    return text + ("…" if len(letter.raw) > limit else "")


def redact_url(url: str) -> str:
    """The broker URL with any password replaced by `***`, fit for messages and logs."""
    parts = []
    for one in url.split(";"):  # dramatiq accepts several URLs separated by ';'
        try:
            split = urlsplit(one)
            if split.password is None:
                parts.append(one)
                continue
            host = split.hostname or ""
            if split.port is not None:
                host = f"{host}:{split.port}"
            netloc = f"{split.username or ''}:***@{host}"
            parts.append(urlunsplit(split._replace(netloc=netloc)))
        except ValueError:
            parts.append("<unparseable broker URL>")
    return ";".join(parts)


# --------------------------------------------------------------------------- selection


def _selector(*, message_id: str | None, actor: str | None, everything: bool) -> Callable[[DeadLetter], bool]:
    """Exactly one way of choosing: a slip in the CLI must never widen a replay or purge to everything."""
    given = [name for name, value in (("message_id", message_id), ("actor", actor), ("all", everything)) if value]
    if len(given) != 1:
        raise ValueError(
            "choose exactly one of message_id, actor or all=True "
            + (f"(got {' and '.join(given)})" if given else "(got none)")
        )
    if message_id:
        return lambda letter: _is(letter, message_id)
    if actor:
        return lambda letter: letter.actor == actor
    return lambda letter: True


def _refusal(letter: DeadLetter, replayed_ids: set[str]) -> str | None:
    """Why this dead message must not be replayed, or None."""
    if letter.body is None:
        return f"undecodable body ({decode_problem(letter.raw)}): {raw_preview(letter)}"
    if letter.message_id in replayed_ids:
        return "another dead copy of this message was already replayed in this run; this copy is left in place"
    return None


# --------------------------------------------------------------------------- replay


class _Publisher:
    """A confirm-mode channel that publishes to canonical queues, declaring each once as dramatiq does."""

    def __init__(self, connection: BlockingConnection) -> None:
        self._connection = connection
        self._channel: BlockingChannel | None = None
        self._declared: set[str] = set()

    def publish(self, queue: str, body: bytes, priority: int | None) -> None:
        """Return only once RabbitMQ has confirmed the message; raise if it was refused or unroutable."""
        channel = self._open()
        if queue not in self._declared:
            _declare_like_dramatiq(channel, queue)
            self._declared.add(queue)
        channel.basic_publish(
            exchange="",
            routing_key=queue,
            body=body,
            properties=pika.BasicProperties(delivery_mode=2, priority=priority),
            mandatory=True,
        )

    def _open(self) -> BlockingChannel:
        # A refused publish can close the channel; the next message gets a fresh one.
        if self._channel is None or not self._channel.is_open:
            self._channel = self._connection.channel()
            self._channel.confirm_delivery()
            self._declared.clear()
        return self._channel


def _replay_one(
    dead_channel: BlockingChannel,
    tag: int,
    letter: DeadLetter,
    publisher: _Publisher,
    before_publish: Callable[[DeadLetter], None] | None,
) -> str | None:
    """Publish one cleaned message, then ack its dead copy; the reason it was skipped, or None."""
    assert letter.body is not None
    if before_publish is not None:
        try:
            before_publish(letter)
        except Exception as error:  # noqa: BLE001  any failure means: leave this one dead
            return f"before_publish failed: {type(error).__name__}: {error}"
    body = replay_body(letter)
    try:
        publisher.publish(letter.queue, _encode(body), _priority(body))
    except (pika.exceptions.UnroutableError, pika.exceptions.NackError, pika.exceptions.ChannelClosedByBroker) as error:
        return f"RabbitMQ refused the publish to {letter.queue}: {type(error).__name__}: {error}"
    _ack_dead_copy(dead_channel, tag)
    log.info("replayed dead message %s (%s) to %s", letter.message_id, letter.actor, letter.queue)
    return None


def replay_body(letter: DeadLetter) -> dict[str, Any]:
    """The message a replay publishes: the original, on its canonical queue, with a fresh retry budget.

    The message_id is kept so that logs follow the message across its lives; options
    that set the message up as a failure (retry count, traceback, a delay) are dropped,
    while the sender's own choices (e.g. max_retries) are kept.
    """
    if letter.body is None:
        raise ValueError("an undecodable dead message cannot be replayed")
    options = {key: value for key, value in letter.body["options"].items() if key not in RESET_OPTIONS}
    return {**letter.body, "queue_name": letter.queue, "options": options}


def _ack_dead_copy(channel: BlockingChannel, delivery_tag: int) -> None:
    """Remove a dead copy; a separate function so tests can interrupt a replay right here."""
    channel.basic_ack(delivery_tag=delivery_tag)


def _priority(body: dict[str, Any]) -> int | None:
    priority = body["options"].get("broker_priority")
    return priority if isinstance(priority, int) and not isinstance(priority, bool) else None


def _encode(body: dict[str, Any]) -> bytes:
    """Encode through dramatiq's Message, exactly as a worker's `send` would."""
    return Message(**{**body, "args": tuple(body["args"])}).encode()


def _declare_like_dramatiq(channel: BlockingChannel, queue: str) -> None:
    """Declare a canonical queue with dramatiq's exact flags and arguments.

    Identical arguments make this a no-op on an existing queue (different ones would be a
    PRECONDITION_FAILED that closes the channel), and a missing queue gets created, so
    the publish cannot be dropped as unroutable.
    """
    from fulfilment.rabbitmq.broker import queue_arguments
    from fulfilment.settings import get_queue_settings

    shape = get_queue_settings()  # the workers' queue type (BROKER_QUEUE_TYPE), as they declare it
    channel.queue_declare(queue=queue, durable=True, arguments=queue_arguments(
        queue, queue_type=shape.broker_queue_type, delivery_limit=shape.broker_delivery_limit))


# --------------------------------------------------------------------------- reading the XQ


def _read_xq(channel: BlockingChannel, queue: str) -> Iterator[tuple[int, DeadLetter]]:
    """Each message of `queue`'s XQ once, unacked, with its delivery tag.

    At most the count seen at the start is read: unacked messages do not come back
    while the channel is open, but stopping there also keeps us from chasing messages
    dead-lettered while we read.
    """
    name = xq_name(queue)
    count = _ready_count(channel, name)
    now = time.time()
    for _ in range(count):
        method, _properties, raw = channel.basic_get(queue=name, auto_ack=False)
        if method is None:
            return
        yield method.delivery_tag, dead_letter(q_name(queue), raw, now=now)


def _ready_count(channel: BlockingChannel, xq: str) -> int:
    """Messages ready in an XQ.  Passive: reading must not create or alter queues.

    A queue that was never declared has no dead messages; the 404 closes the channel,
    which `_dead_channel` tolerates.
    """
    try:
        return int(channel.queue_declare(queue=xq, passive=True).method.message_count)
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == 404:
            return 0
        raise


def dead_letter(queue: str, raw: bytes, *, now: float | None = None) -> DeadLetter:
    """Describe one dead message from its raw body; never raises, whatever the bytes."""
    fields = _json_object(raw)
    body = fields if fields is not None and _message_problem(fields) is None else None
    options = _dict(fields.get("options")) if fields else {}
    args = fields.get("args") if fields else None
    first = args[0] if isinstance(args, list) and args else None
    return DeadLetter(
        queue=q_name(queue),
        message_id=_str(fields.get("message_id")) if fields else None,
        actor=_str(fields.get("actor_name")) if fields else None,
        purchase_id=first if isinstance(first, str) else None,
        request_id=_str(first.get("request_id")) if isinstance(first, dict) else None,
        error=_last_line(options.get("traceback")),
        retries=_int(options.get("retries")) or 0,
        age_seconds=_age(fields, options, time.time() if now is None else now),
        body=body,
        raw=bytes(raw),
    )


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        decoded = get_encoder().decode(raw)
    except Exception:  # noqa: BLE001  garbage of any kind is a normal case here
        return None
    return decoded if isinstance(decoded, dict) else None


def decode_problem(raw: bytes) -> str:
    fields = _json_object(raw)
    if fields is None:
        return "not a JSON object"
    return _message_problem(fields) or "unknown"


def _message_problem(fields: dict[str, Any]) -> str | None:
    """Why a JSON object is not a dramatiq message we could publish again, or None."""
    missing = [name for name in _MESSAGE_FIELDS if name not in fields]
    if missing:
        return f"missing {', '.join(missing)}"
    unknown = sorted(set(fields) - set(_MESSAGE_FIELDS))
    if unknown:
        return f"unexpected {', '.join(unknown)}"
    wrong = [
        name
        for name, kind in _MESSAGE_FIELDS.items()
        if not isinstance(fields[name], kind) or isinstance(fields[name], bool)
    ]
    return f"wrong type for {', '.join(wrong)}" if wrong else None


def _age(fields: dict[str, Any] | None, options: dict[str, Any], now: float) -> float | None:
    """Seconds since the message was last enqueued: its timestamp, or its last retry's if later."""
    stamps = [s for s in (_int(fields.get("message_timestamp")) if fields else None,
                          _int(options.get("requeue_timestamp"))) if s is not None]
    return max(0.0, now - max(stamps) / 1000) if stamps else None


def _last_line(traceback: object) -> str | None:
    if not isinstance(traceback, str):
        return None
    lines = [line.strip() for line in traceback.splitlines() if line.strip()]
    return lines[-1] if lines else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- connections


@contextmanager
def _connection(broker_url: str) -> Iterator[BlockingConnection]:
    """One connection for a whole operation; closing it requeues whatever was not acked."""
    try:
        connection = pika.BlockingConnection(_parameters(broker_url))
    except (pika.exceptions.AMQPError, OSError) as error:  # OSError: e.g. the host name does not resolve
        from fulfilment.dependencies import reason

        cause = _scrub_text(reason(error), broker_url)
        raise BrokerUnavailable(f"cannot connect to RabbitMQ at {redact_url(broker_url)}: {cause}", cause) from None
    try:
        yield connection
    finally:
        if connection.is_open:
            try:
                connection.close()
            except pika.exceptions.AMQPError:
                log.debug("connection to RabbitMQ already gone while closing", exc_info=True)


def _parameters(broker_url: str) -> list[pika.URLParameters]:
    from fulfilment.rabbitmq.broker import node_parameters

    try:
        return node_parameters(broker_url)
    except Exception:  # noqa: BLE001  pika's parse errors may quote the URL, password and all
        raise BrokerUnavailable(f"invalid broker URL: {redact_url(broker_url)}") from None


@contextmanager
def _dead_channel(connection: BlockingConnection) -> Iterator[BlockingChannel]:
    """A channel for reading one XQ; closing it hands every unacked message back to RabbitMQ."""
    channel = connection.channel()
    try:
        yield channel
    finally:
        if channel.is_open:
            channel.close()


def _scrub_text(text: str, broker_url: str) -> str:
    """An error's text with any password from the URL blanked out, just in case pika quoted it."""
    for url in broker_url.split(";"):
        try:
            password = urlsplit(url).password
        except ValueError:
            continue
        if password:
            text = text.replace(password, "***").replace(unquote(password), "***")
    return text
