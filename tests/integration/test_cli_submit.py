"""`fulfil submit --partner ticketmaster` publishes what `submit-json` publishes, and `fulfil status`
shows a Ticketmaster order without TBB's empty seat columns.

Real RabbitMQ (a vhost of this module's own: the messages are read back from `purchases.intake`)
and real Postgres; the CLI runs as a process, as an operator runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

from fulfilment.rabbitmq.queues import INTAKE_QUEUE
from fulfilment.requests import parse_request
from tests.support import servers
from tests.support.events import take_messages
from tests.support.factories import tm_awaiting_tickets, tm_request
from tests.support.servers import REPO


def fulfil(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fulfilment.cli", *args], cwd=REPO, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def intake_bodies(url: str) -> list[Any]:
    """The requests waiting in purchases.intake (dramatiq messages: the request is the one argument)."""
    return [json.loads(body)["args"][0] for _, body in take_messages(url, INTAKE_QUEUE)]


def as_options(body: dict[str, Any]) -> list[str]:
    return [arg for name, value in body.items() for arg in ("--" + name.replace("_", "-"), str(value))]


def test_submit_takes_ticketmaster_fields_and_publishes_what_submit_json_does(
    configured: dict[str, str], own_vhost: servers.TestVhost, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    env = {**configured, "BROKER_URL": own_vhost.url}
    body = tm_request(section_name="101", event_start="2031-01-01T19:30:00-05:00", metadata={"basket": "b-7"})
    options = as_options({k: v for k, v in body.items() if k not in ("metadata", "payment_nonce")}) + [
        "--metadata", json.dumps(body["metadata"])]
    # The nonce is a secret: never on the command line (`ps`), from the environment (or a file) instead.
    done = fulfil({**env, "FULFIL_SUBMIT_PAYMENT_NONCE": body["payment_nonce"]}, "submit", *options)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(parse_request(body).purchase_id)

    path = tmp_path / "request.json"
    path.write_text(json.dumps({**body, "request_id": body["request_id"] + "-json"}))
    assert fulfil(env, "submit-json", str(path)).returncode == 0

    from_options, from_json = intake_bodies(own_vhost.url)
    assert from_options["partner"] == "ticketmaster" and from_options["ticket_type_id"] == "000000000001"
    assert from_options["event_start"] == "2031-01-02T00:30:00Z"
    assert {**from_options, "request_id": None} == {**from_json, "request_id": None}


def test_submit_of_a_tbb_request_is_unchanged(configured: dict[str, str], own_vhost: servers.TestVhost) -> None:
    env = {**configured, "BROKER_URL": own_vhost.url}
    request_id = f"cli-{uuid.uuid4().hex[:8]}"
    done = fulfil(env, "submit", "--request-id", request_id, "--event-id", "5496123", "--section-name", "101",
                  "--row-name", "A", "--quantity", "2", "--delivery-deadline", "2031-01-01T00:00:00Z",
                  "--max-unit-price", "200")
    assert done.returncode == 0, done.stderr
    [published] = intake_bodies(own_vhost.url)
    assert published == {"request_id": request_id, "event_id": "5496123", "section_name": "101", "row_name": "A",
                         "quantity": 2, "delivery_type": "mobile_transfer",
                         "delivery_deadline": "2031-01-01T00:00:00Z", "max_unit_price": "200"}


def test_status_of_a_ticketmaster_order_shows_no_empty_seats(configured: dict[str, str]) -> None:
    purchase_id = tm_awaiting_tickets()
    shown = fulfil(dict(configured), "status", str(purchase_id))
    assert shown.returncode == 0, shown.stderr
    [line] = [line for line in shown.stdout.splitlines() if line.startswith("order ")]
    assert line == f"order     35-{purchase_id.hex[:5]}/LA1 [committed] subtotal 54.41"
