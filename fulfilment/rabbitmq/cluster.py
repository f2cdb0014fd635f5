"""What AMQP cannot tell about a RabbitMQ cluster: which nodes run, and which node leads each queue.

A quorum queue is a Raft group: one leader (where publishes and deliveries go) and followers on the
other nodes. Losing the leader's node makes the survivors elect another one; the operator wants to
see where each queue is led and how many of its members are online. Only RabbitMQ's management
HTTP API (plugin `rabbitmq_management`) says so to a client: set BROKER_MANAGEMENT_URL to it (every
node, `;`-separated: the first that answers is asked, and it answers for the whole cluster).
`fulfil health` (check `queue_leaders`) and the scheduler's gauges read it; `scripts/ha.sh`
enables the plugin on its nodes. Without the setting nothing here is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from fulfilment.dependencies import location
from fulfilment.logging_setup import redact


class ClusterUnreadable(RuntimeError):
    """No management API named in BROKER_MANAGEMENT_URL answered; the message names them, no password."""


@dataclass(frozen=True)
class QueueView:
    name: str
    type: str  # quorum | classic | stream
    leader: str | None  # quorum: the Raft leader's node; classic: the node the queue lives on
    members: tuple[str, ...]  # quorum: the nodes holding a replica (classic: its node)
    online: tuple[str, ...]  # quorum: the members whose replica runs


@dataclass(frozen=True)
class ClusterView:
    nodes: dict[str, bool]  # node name -> running
    queues: dict[str, QueueView]  # by queue name; queues that do not exist yet are absent

    @property
    def running(self) -> tuple[str, ...]:
        return tuple(sorted(name for name, up in self.nodes.items() if up))

    def describe(self, queues: tuple[str, ...]) -> str:
        stopped = sorted(name for name, up in self.nodes.items() if not up)
        nodes = f"nodes running {len(self.running)}/{len(self.nodes)}" + (
            f" (down: {', '.join(stopped)})" if stopped else "")
        led = []
        for name in queues:
            queue = self.queues.get(name)
            if queue is None:
                led.append(f"{name} not declared yet")
            elif queue.type == "quorum":
                led.append(f"{name} led by {queue.leader or 'NO LEADER'} "
                           f"({len(queue.online)}/{len(queue.members)} members online)")
            else:
                led.append(f"{name} {queue.type} on {queue.leader or '?'}")
        return f"{nodes}; queue leaders: {'; '.join(led)}"


def _auth(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without its credentials, and the credentials apart (never logged)."""
    parts = urlsplit(url)
    credentials = (unquote(parts.username or ""), unquote(parts.password or "")) if parts.username else None
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")), credentials


def vhost_of(broker_url: str) -> str:
    """The virtual host the pipeline's queues are in: the path of (the first node of) BROKER_URL."""
    path = urlsplit(broker_url.split(";")[0]).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def read_cluster(management_url: str, broker_url: str, *, timeout: float = 5.0) -> ClusterView:
    """Nodes and queues of the cluster, from the first management API that answers."""
    vhost = quote(vhost_of(broker_url), safe="")
    failures = []
    for url in management_url.split(";"):
        base, credentials = _auth(url)
        try:
            with httpx.Client(base_url=base, auth=credentials, timeout=timeout) as client:
                nodes = client.get("/api/nodes", params={"columns": "name,running"})
                nodes.raise_for_status()
                queues = client.get(f"/api/queues/{vhost}",
                                    params={"columns": "name,type,node,leader,members,online"})
                queues.raise_for_status()
        except (httpx.HTTPError, OSError) as error:
            failures.append(f"{location(url)}: {redact(str(error) or type(error).__name__)[:200]}")
            continue
        return ClusterView(
            nodes={str(n["name"]): bool(n.get("running")) for n in nodes.json()},
            queues={str(q["name"]): _queue(q) for q in queues.json()})
    raise ClusterUnreadable(f"RabbitMQ management API unreachable at {'; '.join(failures)}")


def _queue(row: dict[str, object]) -> QueueView:
    kind = str(row.get("type") or "classic")
    members = row.get("members")
    online = row.get("online")
    if kind == "quorum":
        leader = row.get("leader")
        return QueueView(str(row["name"]), kind, str(leader) if leader else None,
                         tuple(sorted(map(str, members))) if isinstance(members, list) else (),
                         tuple(sorted(map(str, online))) if isinstance(online, list) else ())
    node = str(row["node"]) if row.get("node") else None
    return QueueView(str(row["name"]), kind, node, (node,) if node else (), (node,) if node else ())
