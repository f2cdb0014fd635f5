"""Which node leads each queue (fulfilment/rabbitmq/cluster.py), as `fulfil health` and the gauges
show it. The management API is HTTP, faked here with respx in the shape RabbitMQ answers
(`/api/nodes`, `/api/queues/<vhost>`); tests/ha/test_queue_leaders.py reads a real 3-node cluster."""

from __future__ import annotations

import logging

import httpx
import pytest
import respx

from fulfilment import metrics, outages
from fulfilment.health import check_queue_leaders, run_checks
from fulfilment.rabbitmq.cluster import ClusterUnreadable, read_cluster, vhost_of
from fulfilment.rabbitmq.queues import QUEUES
from fulfilment.scheduler.gauges import _cluster_gauges

BROKER_URL = "amqp://fulfil:fulfil@10.0.0.1:5672/%2F;amqp://fulfil:fulfil@10.0.0.2:5672/%2F"
MANAGEMENT = "http://fulfil:s3cret-mgmt@10.0.0.1:15672;http://fulfil:s3cret-mgmt@10.0.0.2:15672/"
NODES = ["rabbit@a", "rabbit@b", "rabbit@c"]


def quorum(name: str, leader: str | None, online: list[str] | None = None) -> dict[str, object]:
    return {"name": name, "type": "quorum", "node": leader, "leader": leader, "members": NODES,
            "online": NODES if online is None else online}


def nodes(down: tuple[str, ...] = ()) -> list[dict[str, object]]:
    return [{"name": n, "running": n not in down} for n in NODES]


def test_the_vhost_is_the_broker_url_s() -> None:
    assert vhost_of(BROKER_URL) == "/"
    assert vhost_of("amqp://u:p@h:5672/shop%2Fone") == "shop/one"
    assert vhost_of("amqp://u:p@h:5672") == "/"


@respx.mock
def test_read_cluster_asks_the_next_node_when_one_is_down_and_sends_its_credentials() -> None:
    respx.get("http://10.0.0.1:15672/api/nodes").mock(side_effect=httpx.ConnectError("refused"))
    seen = respx.get("http://10.0.0.2:15672/api/nodes").mock(return_value=httpx.Response(200, json=nodes()))
    respx.get("http://10.0.0.2:15672/api/queues/%2F").mock(return_value=httpx.Response(200, json=[
        quorum("purchases.intake", "rabbit@b"),
        {"name": "fulfilment.events.unrouted", "type": "classic", "node": "rabbit@a"},
    ]))
    view = read_cluster(MANAGEMENT, BROKER_URL)
    assert view.running == tuple(NODES)
    assert view.queues["purchases.intake"].leader == "rabbit@b"
    assert view.queues["purchases.intake"].online == tuple(NODES)
    assert view.queues["fulfilment.events.unrouted"].leader == "rabbit@a"
    assert seen.calls.last.request.headers["authorization"] == httpx.BasicAuth("fulfil", "s3cret-mgmt")._auth_header
    line = view.describe(("purchases.intake", "purchases.quote", "fulfilment.events.unrouted"))
    assert line == ("nodes running 3/3; queue leaders: purchases.intake led by rabbit@b (3/3 members online); "
                    "purchases.quote not declared yet; fulfilment.events.unrouted classic on rabbit@a")


@respx.mock
def test_no_management_api_answering_is_one_line_without_the_password() -> None:
    respx.get(url__regex=r"http://10\.0\.0\.[12]:15672/api/nodes").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(ClusterUnreadable) as raised:
        read_cluster(MANAGEMENT, BROKER_URL)
    assert "10.0.0.1:15672" in str(raised.value) and "10.0.0.2:15672" in str(raised.value)
    assert "s3cret-mgmt" not in str(raised.value)
    respx.get(url__regex=r"http://10\.0\.0\.[12]:15672/api/nodes").mock(return_value=httpx.Response(401))
    with pytest.raises(ClusterUnreadable, match="401"):
        read_cluster(MANAGEMENT, BROKER_URL)


@respx.mock
def test_health_names_the_leaders_and_fails_when_a_node_is_down_or_a_queue_has_no_leader(
        ha_settings) -> None:  # type: ignore[no-untyped-def]
    respx.get("http://10.0.0.1:15672/api/nodes").mock(return_value=httpx.Response(200, json=nodes()))
    queues = respx.get("http://10.0.0.1:15672/api/queues/%2F")
    queues.mock(return_value=httpx.Response(200, json=[quorum(q, "rabbit@c") for q in QUEUES]))
    line = check_queue_leaders(ha_settings)
    assert line.startswith("nodes running 3/3; queue leaders: purchases.intake led by rabbit@c (3/3 members online)")

    respx.get("http://10.0.0.1:15672/api/nodes").mock(return_value=httpx.Response(200, json=nodes(down=("rabbit@c",))))
    queues.mock(return_value=httpx.Response(200, json=[quorum(q, "rabbit@a", NODES[:2]) for q in QUEUES]))
    with pytest.raises(Exception, match=r"nodes running 2/3 \(down: rabbit@c\).*led by rabbit@a \(2/3 members"):
        check_queue_leaders(ha_settings)

    respx.get("http://10.0.0.1:15672/api/nodes").mock(return_value=httpx.Response(200, json=nodes()))
    queues.mock(return_value=httpx.Response(200, json=[quorum(q, None, []) for q in QUEUES]))
    with pytest.raises(Exception, match="purchases.intake led by NO LEADER"):
        check_queue_leaders(ha_settings)


def test_health_runs_the_check_only_with_a_management_url(ha_settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import fulfilment.health as health

    monkeypatch.setattr(health, "CHECKS", [])
    monkeypatch.setattr(health, "check_queue_leaders", lambda settings: "checked")
    assert [(r.name, r.detail) for r in run_checks(ha_settings.model_copy(update={"tbb_enabled": False}))] == [
        ("queue_leaders", "checked")]
    without = ha_settings.model_copy(update={"broker_management_url": None, "tbb_enabled": False})
    assert run_checks(without) == []


def test_the_gauges_show_leaders_and_nodes_and_are_dropped_when_unreadable(caplog, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from fulfilment.rabbitmq.cluster import ClusterView, QueueView

    view = ClusterView(nodes={"rabbit@a": True, "rabbit@b": False},
                       queues={"purchases.intake": QueueView("purchases.intake", "quorum", "rabbit@a",
                                                             ("rabbit@a", "rabbit@b"), ("rabbit@a",)),
                               "someone.else": QueueView("someone.else", "quorum", "rabbit@b", (), ())})
    _cluster_gauges(lambda: view)
    assert metrics.BROKER_NODE_RUNNING.get("rabbit@a") == 1 and metrics.BROKER_NODE_RUNNING.get("rabbit@b") == 0
    assert metrics.QUEUE_LEADER.get("purchases.intake", "rabbit@a") == 1
    assert metrics.QUEUE_LEADER.get("someone.else", "rabbit@b") is None  # not a queue of the pipeline
    assert metrics.QUEUE_MEMBERS_ONLINE.get("purchases.intake") == 1

    management = outages.Outage("RabbitMQ management API")
    monkeypatch.setattr("fulfilment.scheduler.gauges.BROKER_MANAGEMENT", management)

    def unreadable() -> ClusterView:
        raise ClusterUnreadable("RabbitMQ management API unreachable at 10.0.0.1:15672: refused")

    with caplog.at_level(logging.INFO, logger="fulfilment.outage"):
        for _ in range(5):
            _cluster_gauges(unreadable)
        _cluster_gauges(lambda: view)
    assert metrics.QUEUE_LEADER.get("purchases.intake", "rabbit@a") == 1  # back
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0].startswith("RabbitMQ management API down:") and "back after" in lines[1]
    _cluster_gauges(unreadable)
    assert metrics.QUEUE_LEADER.get("purchases.intake", "rabbit@a") is None  # absent, never stale
    management.recovered()


@pytest.fixture
def ha_settings(monkeypatch):  # type: ignore[no-untyped-def]
    from fulfilment.settings import Settings

    for field in Settings.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)
    return Settings(_env_file=None, database_url="postgresql+psycopg://u:p@h/db", broker_url=BROKER_URL,  # type: ignore[call-arg]
                    broker_management_url=MANAGEMENT, tbb_base_url="http://127.0.0.1:1", tbb_client_id="x",
                    tbb_client_secret="y")
