"""Dead letters on a real RabbitMQ: listing leaves them in place, replay never loses one.

Dead letters are made the way a dramatiq worker makes them: the queues are declared
by dramatiq's own RabbitmqBroker, a message is published to the queue, taken with
`basic_get` and nacked without requeue, so RabbitMQ itself moves it into `<queue>.XQ`.

Most tests use a queue set of their own (`queues`), so that they neither see each
other's messages nor leave anything behind in the `purchases.*` queues of the shared
test vhost, where the end-to-end workers run.
"""

from __future__ import annotations

import json
import time
import traceback
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pika
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from fulfilment import dependencies
from fulfilment.rabbitmq import dead_letters
from fulfilment.rabbitmq.dead_letters import QUEUES, DeadLetter
from tests.support import servers

QUOTE_TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "workers/quote.py", line 14, in quote_purchase\n'
    "    steps.quote(purchase_id)\n"
    "fulfilment.partners.errors.TbbUnavailable: 503 SERVICE_UNAVAILABLE from create_quote\n\n"
)


@pytest.fixture
def broker(vhost: servers.TestVhost) -> Iterator[RabbitmqBroker]:
    built = RabbitmqBroker(url=vhost.url, confirm_delivery=True, middleware=[])
    yield built
    built.close()


@pytest.fixture
def queues(broker: RabbitmqBroker) -> Iterator[tuple[str, ...]]:
    """A queue set like ours, for this test only, declared by dramatiq itself; deleted afterwards."""
    prefix = f"dlqtest_{uuid.uuid4().hex[:8]}"
    names = tuple(f"{prefix}.{name.split('.')[1]}" for name in QUEUES)
    for name in names:
        broker.declare_queue(name, ensure=True)
    yield names
    channel = broker.connection.channel()
    for name in names:
        for suffix in ("", ".DQ", ".XQ"):
            channel.queue_delete(name + suffix)
    channel.close()


def message(queue: str, actor: str, args: list[Any], **options: Any) -> dict[str, Any]:
    return {
        "queue_name": queue,
        "actor_name": actor,
        "args": args,
        "kwargs": {},
        "options": options,
        "message_id": str(uuid.uuid4()),
        "message_timestamp": int(time.time() * 1000) - 120_000,
    }


def exhausted(queue: str, actor: str, args: list[Any], **options: Any) -> dict[str, Any]:
    """A message as dramatiq's Retries middleware leaves it when it gives up."""
    return message(queue, actor, args, retries=8, traceback=QUOTE_TRACEBACK,
                   requeue_timestamp=int(time.time() * 1000) - 60_000, max_retries=8, **options)


def kill(url: str, queue: str, body: bytes) -> None:
    """Publish to `queue` and reject the message as a worker does, so RabbitMQ dead-letters it."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2), mandatory=True)
        method, _properties, got = channel.basic_get(queue, auto_ack=False)
        assert method is not None and got == body, f"{queue} was expected to hold only this message"
        channel.basic_nack(method.delivery_tag, requeue=False)
        for _ in range(50):  # dead-lettering is asynchronous
            if any(raw == body for raw in peek(channel, f"{queue}.XQ")):
                return
            time.sleep(0.05)
        raise AssertionError(f"the message never reached {queue}.XQ")
    finally:
        connection.close()


def kill_message(url: str, body: dict[str, Any]) -> dict[str, Any]:
    kill(url, body["queue_name"].removesuffix(".DQ"), json.dumps(body).encode())
    return body


def peek(channel: Any, queue: str) -> list[bytes]:
    """Everything in a queue, left in place."""
    bodies, tags = [], []
    for _ in range(channel.queue_declare(queue, passive=True).method.message_count):
        method, _properties, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            break
        bodies.append(body)
        tags.append(method.delivery_tag)
    for tag in tags:
        channel.basic_nack(tag, requeue=True)
    return bodies


def contents(url: str, queue: str) -> list[bytes]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return peek(connection.channel(), queue)
    finally:
        connection.close()


def count(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def ids_in(url: str, queue: str) -> list[str]:
    return [str(dead_letters.dead_letter(queue, raw).message_id) for raw in contents(url, queue)]


def test_list_describes_each_dead_message_and_leaves_the_xq_intact(
    vhost: servers.TestVhost, broker: RabbitmqBroker
) -> None:
    # The real queues, declared by dramatiq: this is what `fulfil dlq list` reads.
    for name in QUEUES:
        broker.declare_queue(name, ensure=True)
    purchase_id = str(uuid.uuid4())
    request_id = "req-" + uuid.uuid4().hex
    quote = kill_message(vhost.url, exhausted("purchases.quote", "quote_purchase", [purchase_id]))
    intake = kill_message(vhost.url, message("purchases.intake", "submit_purchase", [{"request_id": request_id}],
                                             retries=1, traceback="ValueError: bad\n"))
    before = {name: count(vhost.url, f"{name}.XQ") for name in QUEUES}
    try:
        listed = {d.message_id: d for d in dead_letters.list_dead_letters(vhost.url)}
        again = {d.message_id: d for d in dead_letters.list_dead_letters(vhost.url)}
        assert {name: count(vhost.url, f"{name}.XQ") for name in QUEUES} == before
        assert set(again) == set(listed)

        dead = listed[quote["message_id"]]
        assert dead.queue == "purchases.quote"
        assert dead.actor == "quote_purchase"
        assert dead.purchase_id == purchase_id and dead.request_id is None
        assert dead.error == "fulfilment.partners.errors.TbbUnavailable: 503 SERVICE_UNAVAILABLE from create_quote"
        assert dead.retries == 8
        assert dead.age_seconds is not None and 55 <= dead.age_seconds <= 90  # from requeue_timestamp, the later
        assert dead.body == quote and json.loads(dead.raw) == quote

        dead = listed[intake["message_id"]]
        assert dead.queue == "purchases.intake" and dead.actor == "submit_purchase"
        assert dead.request_id == request_id and dead.purchase_id is None
        assert dead.error == "ValueError: bad" and dead.retries == 1
        assert dead.age_seconds is not None and 115 <= dead.age_seconds <= 150  # from message_timestamp

        found = dead_letters.find(vhost.url, quote["message_id"])
        assert found is not None and found.raw == listed[quote["message_id"]].raw and found.queue == "purchases.quote"
        assert dead_letters.find(vhost.url, str(uuid.uuid4())) is None
    finally:
        assert dead_letters.purge(vhost.url, message_id=quote["message_id"]) == 1
        assert dead_letters.purge(vhost.url, message_id=intake["message_id"]) == 1
    assert {name: count(vhost.url, f"{name}.XQ") for name in QUEUES} == {
        name: before[name] - (name in ("purchases.quote", "purchases.intake")) for name in QUEUES}


def test_a_missing_queue_has_no_dead_letters(vhost: servers.TestVhost) -> None:
    assert dead_letters.list_dead_letters(vhost.url, queues=[f"never_declared_{uuid.uuid4().hex}"]) == []


def test_replay_by_id_sends_a_fresh_message_to_the_queue_and_removes_only_its_dead_copy(
    vhost: servers.TestVhost, queues: tuple[str, ...]
) -> None:
    quote_q = queues[1]
    # This one died waiting in the delay queue: it comes back on the canonical queue.
    target = kill_message(vhost.url, exhausted(f"{quote_q}.DQ", "quote_purchase", [str(uuid.uuid4())],
                                               eta=int(time.time() * 1000), redis_message_id="r-1"))
    other = kill_message(vhost.url, exhausted(quote_q, "quote_purchase", [str(uuid.uuid4())]))

    report = dead_letters.replay(vhost.url, message_id=target["message_id"], queues=queues)

    assert [d.message_id for d in report.replayed] == [target["message_id"]]
    assert report.skipped == [] and report.dry_run is False
    [live] = contents(vhost.url, quote_q)
    sent = json.loads(live)
    assert sent["message_id"] == target["message_id"]
    assert sent["queue_name"] == quote_q
    assert sent["options"] == {"max_retries": 8}
    assert {k: sent[k] for k in ("actor_name", "args", "kwargs", "message_timestamp")} == {
        k: target[k] for k in ("actor_name", "args", "kwargs", "message_timestamp")}
    assert dramatiq.Message.decode(live).message_id == target["message_id"]  # a worker can read it
    assert ids_in(vhost.url, f"{quote_q}.XQ") == [other["message_id"]]


def test_the_replayed_message_is_persistent(vhost: servers.TestVhost, queues: tuple[str, ...]) -> None:
    target = kill_message(vhost.url, exhausted(queues[2], "place_order", [str(uuid.uuid4())]))
    dead_letters.replay(vhost.url, message_id=target["message_id"], queues=queues)
    connection = pika.BlockingConnection(pika.URLParameters(vhost.url))
    try:
        method, properties, _body = connection.channel().basic_get(queues[2], auto_ack=True)
    finally:
        connection.close()
    assert method is not None and properties.delivery_mode == 2


def test_replay_declares_a_missing_queue_exactly_as_dramatiq_would(
    vhost: servers.TestVhost, queues: tuple[str, ...], broker: RabbitmqBroker
) -> None:
    quote_q = queues[1]
    target = kill_message(vhost.url, exhausted(quote_q, "quote_purchase", [str(uuid.uuid4())]))
    channel = broker.connection.channel()
    channel.queue_delete(quote_q)
    channel.close()

    report = dead_letters.replay(vhost.url, message_id=target["message_id"], queues=queues)

    assert len(report.replayed) == 1 and count(vhost.url, quote_q) == 1
    # dramatiq's own declaration of the recreated queue is accepted: no PRECONDITION_FAILED.
    fresh = RabbitmqBroker(url=vhost.url, confirm_delivery=True, middleware=[])
    try:
        fresh.declare_queue(quote_q, ensure=True)
        assert fresh.get_queue_message_counts(quote_q) == (1, 0, 0)
    finally:
        fresh.close()


def test_replay_by_actor_takes_only_that_actors_messages(vhost: servers.TestVhost, queues: tuple[str, ...]) -> None:
    order_q = queues[2]
    places = [kill_message(vhost.url, exhausted(order_q, "place_order", [str(uuid.uuid4())])) for _ in range(2)]
    resolve = kill_message(vhost.url, exhausted(order_q, "resolve_order", [str(uuid.uuid4())]))
    quote = kill_message(vhost.url, exhausted(queues[1], "quote_purchase", [str(uuid.uuid4())]))

    report = dead_letters.replay(vhost.url, actor="place_order", queues=queues)

    assert sorted(str(d.message_id) for d in report.replayed) == sorted(p["message_id"] for p in places)
    assert sorted(ids_in(vhost.url, order_q)) == sorted(p["message_id"] for p in places)
    assert ids_in(vhost.url, f"{order_q}.XQ") == [resolve["message_id"]]
    assert ids_in(vhost.url, f"{queues[1]}.XQ") == [quote["message_id"]]


def test_replay_all_empties_every_xq_into_its_queue(vhost: servers.TestVhost, queues: tuple[str, ...]) -> None:
    sent = {q: kill_message(vhost.url, exhausted(q, "some_actor", [str(uuid.uuid4())])) for q in queues}

    report = dead_letters.replay(vhost.url, all=True, queues=queues)

    assert sorted(str(d.message_id) for d in report.replayed) == sorted(m["message_id"] for m in sent.values())
    for q, body in sent.items():
        assert count(vhost.url, f"{q}.XQ") == 0
        assert ids_in(vhost.url, q) == [body["message_id"]]
    assert dead_letters.list_dead_letters(vhost.url, queues) == []


def test_dry_run_changes_nothing(vhost: servers.TestVhost, queues: tuple[str, ...]) -> None:
    bodies = [kill_message(vhost.url, exhausted(queues[3], "check_transfer", [str(uuid.uuid4())])) for _ in range(2)]
    kill(vhost.url, queues[3], b"not json")
    called: list[DeadLetter] = []

    report = dead_letters.replay(vhost.url, all=True, dry_run=True, before_publish=called.append, queues=queues)

    assert report.dry_run is True
    assert sorted(str(d.message_id) for d in report.replayed) == sorted(b["message_id"] for b in bodies)
    assert [d.raw for d, _reason in report.skipped] == [b"not json"]
    assert called == []
    assert count(vhost.url, queues[3]) == 0
    assert count(vhost.url, f"{queues[3]}.XQ") == 3


def test_a_failing_before_publish_leaves_the_dead_copy_and_says_why(
    vhost: servers.TestVhost, queues: tuple[str, ...]
) -> None:
    quote_q = queues[1]
    refused = kill_message(vhost.url, exhausted(quote_q, "quote_purchase", [str(uuid.uuid4())]))
    accepted = kill_message(vhost.url, exhausted(quote_q, "quote_purchase", [str(uuid.uuid4())]))
    seen: list[str | None] = []

    def before_publish(letter: DeadLetter) -> None:
        seen.append(letter.purchase_id)
        if letter.message_id == refused["message_id"]:
            raise RuntimeError(f"purchase {letter.purchase_id} is already transfer_complete")

    report = dead_letters.replay(vhost.url, actor="quote_purchase", before_publish=before_publish, queues=queues)

    assert seen == [refused["args"][0], accepted["args"][0]]
    assert [d.message_id for d in report.replayed] == [accepted["message_id"]]
    [(letter, reason)] = report.skipped
    assert letter.message_id == refused["message_id"]
    assert "RuntimeError" in reason and "already transfer_complete" in reason
    assert ids_in(vhost.url, f"{quote_q}.XQ") == [refused["message_id"]]
    assert ids_in(vhost.url, quote_q) == [accepted["message_id"]]


def test_an_undecodable_body_is_listed_refused_by_replay_and_removed_by_purge_all(
    vhost: servers.TestVhost, queues: tuple[str, ...]
) -> None:
    quote_q = queues[1]
    garbage = b"\x00\xff this is not json" + b"x" * 200
    kill(vhost.url, quote_q, garbage)
    kill(vhost.url, quote_q, b'{"hello": "a JSON object, but no dramatiq message"}')
    good = kill_message(vhost.url, exhausted(quote_q, "quote_purchase", [str(uuid.uuid4())]))

    listed = dead_letters.list_dead_letters(vhost.url, queues)
    assert [d.raw for d in listed] == [garbage, b'{"hello": "a JSON object, but no dramatiq message"}',
                                      json.dumps(good).encode()]
    junk = listed[0]
    assert junk.queue == quote_q and junk.body is None and junk.message_id is None and junk.actor is None
    assert junk.retries == 0 and junk.error is None and junk.age_seconds is None
    assert dead_letters.raw_preview(junk).startswith(repr(b"\x00\xff this is not json")[:-1])
    assert dead_letters.raw_preview(junk).endswith("…")
    assert listed[1].body is None

    report = dead_letters.replay(vhost.url, all=True, queues=queues)
    assert [d.message_id for d in report.replayed] == [good["message_id"]]
    reasons = {d.raw: reason for d, reason in report.skipped}
    assert reasons[garbage].startswith("undecodable body (not a JSON object)")
    assert "missing queue_name" in reasons[b'{"hello": "a JSON object, but no dramatiq message"}']
    assert count(vhost.url, f"{quote_q}.XQ") == 2

    assert dead_letters.purge(vhost.url, all=True, queues=queues) == 2
    assert count(vhost.url, f"{quote_q}.XQ") == 0
    assert ids_in(vhost.url, quote_q) == [good["message_id"]]


def test_an_undecodable_body_is_selected_by_its_key_alone(vhost: servers.TestVhost, queues: tuple[str, ...]) -> None:
    quote_q = queues[1]
    first, second = b"\x00garbage one", b'{"hello": "garbage two"}'
    kill(vhost.url, quote_q, first)
    kill(vhost.url, quote_q, second)
    good = kill_message(vhost.url, exhausted(quote_q, "quote_purchase", [str(uuid.uuid4())]))
    listed = dead_letters.list_dead_letters(vhost.url, queues)
    keys = [d.key for d in listed]
    assert keys[2] == good["message_id"] and keys[0].startswith("raw-") and keys[0] != keys[1]
    assert keys[0] == dead_letters.raw_key(quote_q, first)  # stable: the same bytes, the same key
    found = dead_letters.find(vhost.url, keys[0], queues)
    assert found is not None and found.raw == first

    assert dead_letters.purge(vhost.url, message_id=keys[0], queues=queues) == 1
    assert [d.raw for d in dead_letters.list_dead_letters(vhost.url, queues)] == [second, json.dumps(good).encode()]
    assert dead_letters.purge(vhost.url, message_id=keys[0], queues=queues) == 0


def test_fulfil_dlq_purge_by_id_removes_one_undecodable_message(
    local_servers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from fulfilment.cli import app
    from fulfilment.settings import get_settings

    vhost = servers.create_vhost("fulfil_dlq_cli")  # the real queue names, in a vhost of this test's own
    declaring = RabbitmqBroker(url=vhost.url, confirm_delivery=True, middleware=[])
    declaring.declare_queue("purchases.quote", ensure=True)
    declaring.close()
    try:
        _purge_by_id_through_the_cli(vhost, monkeypatch, app, get_settings, CliRunner)
    finally:
        servers.delete_vhost(vhost)


def _purge_by_id_through_the_cli(vhost: servers.TestVhost, monkeypatch: pytest.MonkeyPatch, app: Any,
                                 get_settings: Any, CliRunner: Any) -> None:
    kill(vhost.url, "purchases.quote", b"\xffjunk")
    kill(vhost.url, "purchases.quote", b"\xffother junk")
    monkeypatch.setenv("BROKER_URL", vhost.url)
    get_settings.cache_clear()
    try:
        listed = CliRunner().invoke(app, ["dlq", "list"])
        key = dead_letters.raw_key("purchases.quote", b"\xffjunk")
        assert listed.exit_code == 0 and key in listed.output, listed.output
        shown = CliRunner().invoke(app, ["dlq", "show", key])
        assert shown.exit_code == 0 and "\\xffjunk" in shown.output, shown.output
        purged = CliRunner().invoke(app, ["dlq", "purge", "--id", key, "--yes"])
        assert purged.exit_code == 0 and "purged 1 dead message(s)" in purged.output, purged.output
        again = CliRunner().invoke(app, ["dlq", "purge", "--id", key, "--yes"])
        assert again.exit_code == 1 and f"no dead message {key}" in again.output
    finally:
        get_settings.cache_clear()
    assert [d.raw for d in dead_letters.list_dead_letters(vhost.url)
            if d.queue == "purchases.quote"] == [b"\xffother junk"]


def test_purge_by_id_and_by_actor(vhost: servers.TestVhost, queues: tuple[str, ...]) -> None:
    order_q = queues[2]
    a, b = (kill_message(vhost.url, exhausted(order_q, "place_order", [str(uuid.uuid4())])) for _ in range(2))
    c = kill_message(vhost.url, exhausted(order_q, "resolve_order", [str(uuid.uuid4())]))

    assert dead_letters.purge(vhost.url, message_id=a["message_id"], queues=queues) == 1
    assert sorted(ids_in(vhost.url, f"{order_q}.XQ")) == sorted([b["message_id"], c["message_id"]])
    assert dead_letters.purge(vhost.url, actor="resolve_order", queues=queues) == 1
    assert ids_in(vhost.url, f"{order_q}.XQ") == [b["message_id"]]
    assert dead_letters.purge(vhost.url, message_id=str(uuid.uuid4()), queues=queues) == 0
    assert count(vhost.url, order_q) == 0


def test_a_replay_interrupted_between_publish_and_ack_duplicates_but_loses_nothing(
    vhost: servers.TestVhost, queues: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    quote_q = queues[1]
    target = kill_message(vhost.url, exhausted(quote_q, "quote_purchase", [str(uuid.uuid4())]))

    def crash(channel: Any, delivery_tag: int) -> None:
        raise KeyboardInterrupt("operator hit ^C")

    monkeypatch.setattr(dead_letters, "_ack_dead_copy", crash)
    with pytest.raises(KeyboardInterrupt):
        dead_letters.replay(vhost.url, message_id=target["message_id"], queues=queues)

    assert ids_in(vhost.url, quote_q) == [target["message_id"]]
    assert ids_in(vhost.url, f"{quote_q}.XQ") == [target["message_id"]]


def test_a_second_dead_copy_of_a_message_is_not_replayed_twice(
    vhost: servers.TestVhost, queues: tuple[str, ...]
) -> None:
    quote_q = queues[1]
    target = exhausted(quote_q, "quote_purchase", [str(uuid.uuid4())])
    kill_message(vhost.url, target)
    kill_message(vhost.url, target)

    report = dead_letters.replay(vhost.url, message_id=target["message_id"], queues=queues)

    assert len(report.replayed) == 1
    [(_letter, reason)] = report.skipped
    assert "already replayed" in reason
    assert count(vhost.url, quote_q) == 1 and count(vhost.url, f"{quote_q}.XQ") == 1


@pytest.mark.parametrize(
    "selection",
    [{}, {"message_id": "x", "actor": "y"}, {"actor": "y", "all": True}, {"message_id": "", "all": False}],
)
def test_exactly_one_selection_is_required(vhost: servers.TestVhost, selection: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="exactly one of message_id, actor or all"):
        dead_letters.replay(vhost.url, **selection)
    with pytest.raises(ValueError, match="exactly one of message_id, actor or all"):
        dead_letters.purge(vhost.url, **selection)


def test_broker_errors_never_show_the_password() -> None:
    url = "amqp://fulfil:s3cret-pw@127.0.0.1:1/%2F"
    with pytest.raises(dependencies.BrokerUnavailable) as raised:
        dead_letters.list_dead_letters(url)
    text = "".join(traceback.format_exception(raised.value))
    assert "s3cret-pw" not in text and "fulfil:***@127.0.0.1:1" in text
    assert dead_letters.redact_url("amqp://u:p%40ss@h:5672/v;amqp://h2") == "amqp://u:***@h:5672/v;amqp://h2"
