"""Admin API: catalogue, quotes/orders views, stats, reset, loopback guard; config from env."""

from __future__ import annotations

import json

import pytest
from sandbox_testkit import Sandbox, assert_error
from starlette.testclient import TestClient

from fulfilment.partners.tbb.sandbox import SandboxConfig, create_app
from fulfilment.partners.tbb.sandbox.__main__ import main as cli_main
from fulfilment.partners.tbb.sandbox.accounts import PartnerAccount


def test_catalogue_documents_the_seeded_ids(sandbox: Sandbox) -> None:
    body = sandbox.client.get("/admin/catalogue").json()
    assert body["past_event_id"] == "5490000" and body["tiny_inventory_event_id"] == "5490001"
    events = {e["event_id"]: e for e in body["events"]}
    assert set(events) == {"5490000", "5490001", "5496123", "5496124", "5496125", "5496126", "5496127"}
    assert events["5490000"]["is_past"] is True
    assert sum(not e["is_past"] for e in events.values()) == 6
    tiny = {s["section_name"]: s for s in events["5490001"]["sections"]}
    assert [(r["row_name"], r["capacity"]) for r in tiny["101"]["rows"]] == [("A", 2), ("B", 0)]
    assert [(r["row_name"], r["capacity"]) for r in tiny["102"]["rows"]] == [("A", 0)]
    patriots = {s["section_name"]: s for s in events["5496123"]["sections"]}
    assert patriots["101"]["unit_price"] == 175.0
    assert [r["capacity"] for r in patriots["101"]["rows"]] == [20] * 5


def test_seats_per_row_knob(make_sandbox) -> None:
    sandbox = make_sandbox(seats_per_row=10_000)
    assert sandbox.quote(quantity=5000).status_code == 201
    events = sandbox.client.get("/admin/catalogue").json()["events"]
    tiny = next(e for e in events if e["event_id"] == "5490001")
    assert tiny["sections"][0]["rows"][0]["capacity"] == 2  # the tiny event ignores the knob


def test_catalogue_shows_sales(sandbox: Sandbox) -> None:
    sandbox.order(sandbox.quote_id(quantity=3))
    events = sandbox.client.get("/admin/catalogue").json()["events"]
    row = next(e for e in events if e["event_id"] == "5496123")["sections"][0]["rows"][0]
    assert row == {"row_name": "A", "capacity": 20, "sold": 3, "available": 17}


def test_admin_quotes_flags(make_sandbox) -> None:
    sandbox = make_sandbox(quote_ttl_seconds=10)
    used = sandbox.quote_id()
    unused = sandbox.quote_id(partner="partner-b")
    order_id = sandbox.order(used).json()["data"]["order_id"]
    sandbox.clock.advance(10)
    quotes = {q["quote_id"]: q for q in sandbox.client.get("/admin/quotes").json()["quotes"]}
    assert quotes[used]["consumed"] is True and quotes[used]["consumed_by_order_id"] == order_id
    assert quotes[used]["partner"] == "partner-a" and quotes[used]["expired"] is True
    assert quotes[unused]["consumed"] is False and quotes[unused]["partner"] == "partner-b"
    only_b = sandbox.client.get("/admin/quotes", params={"partner": "partner-b"}).json()
    assert only_b["count"] == 1 and only_b["quotes"][0]["quote_id"] == unused


def test_admin_orders_filters(sandbox: Sandbox) -> None:
    a = sandbox.order(sandbox.quote_id()).json()["data"]
    sandbox.order(sandbox.quote_id(partner="partner-b"), partner="partner-b")
    assert sandbox.client.get("/admin/orders").json()["count"] == 2
    only_a = sandbox.client.get("/admin/orders", params={"partner": "partner-a"}).json()
    assert [o["order_id"] for o in only_a["orders"]] == [a["order_id"]]
    assert only_a["orders"][0]["partner"] == "partner-a"
    assert sandbox.client.get("/admin/orders", params={"status": "cancelled"}).json()["count"] == 0
    assert sandbox.client.get("/admin/orders", params={"status": "bogus"}).status_code == 400


def test_stats(sandbox: Sandbox) -> None:
    sandbox.order(sandbox.quote_id())
    sandbox.quote_id(partner="partner-b")
    stats = sandbox.client.get("/admin/stats").json()
    assert stats["tokens_issued"] == {"partner-a": 1, "partner-b": 1}
    assert stats["quotes"] == {"partner-a": 1, "partner-b": 1}
    assert stats["orders"] == {"partner-a": 1}
    assert stats["orders_by_status"] == {"awaiting_transfer": 1}
    assert stats["orders_on_expired_quote"] == 0
    assert stats["requests"]["create_order"] == 1
    assert "faults" in stats


def test_reset_restores_everything(sandbox: Sandbox) -> None:
    old_token = sandbox.token()
    sandbox.order(sandbox.quote_id(event_id="5490001", quantity=2))
    sandbox.client.patch("/admin/config", json={"quote_ttl_seconds": 5})
    sandbox.client.put("/admin/faults", json={"list_events": {"error_rate": 1.0}})
    assert sandbox.client.post("/admin/reset").json() == {"ok": True}
    stats = sandbox.client.get("/admin/stats").json()
    assert stats["orders_total"] == 0 and stats["quotes_total"] == 0 and stats["tokens_issued_total"] == 0
    assert stats["faults"]["counters"] == {} and stats["requests"] == {}
    assert sandbox.client.get("/admin/faults").json()["rules"] == {}
    assert sandbox.client.get("/admin/config").json()["quote_ttl_seconds"] == 3600
    # Tokens are gone, inventory is back.
    assert_error(sandbox.client.get("/v1/events", headers={"Authorization": f"Bearer {old_token}"}),
                 401, "UNAUTHORIZED")
    sandbox._tokens.clear()
    assert sandbox.quote(event_id="5490001", quantity=2).status_code == 201


def test_config_view_hides_secrets(sandbox: Sandbox) -> None:
    text = sandbox.client.get("/admin/config").text
    assert "sandbox-secret" not in text
    config = json.loads(text)
    assert {p["client_id"] for p in config["partners"]} == {"partner-a", "partner-b", "partner-nopay",
                                                           "partner-suspended"}
    assert "sandbox-secret" not in repr(PartnerAccount("x", "sandbox-secret-x"))


def test_admin_refuses_non_loopback_clients() -> None:
    remote = TestClient(create_app(SandboxConfig()), client=("10.1.2.3", 40000))
    r = remote.get("/admin/stats")
    assert r.status_code == 403 and "loopback" in r.json()["error"]
    assert remote.get("/healthz").status_code == 200  # the partner API itself is not restricted
    local = TestClient(create_app(SandboxConfig()), client=("127.0.0.1", 40000))
    assert local.get("/admin/stats").status_code == 200
    opened = TestClient(create_app(SandboxConfig(admin_loopback_only=False)), client=("10.1.2.3", 40000))
    assert opened.get("/admin/stats").status_code == 200


def test_config_from_env() -> None:
    env = {
        "SANDBOX_QUOTE_TTL_SECONDS": "1.5",
        "SANDBOX_TOKEN_TTL_SECONDS": "60",
        "SANDBOX_TRANSFER_AFTER_SECONDS": "none",
        "SANDBOX_TRANSFER_OUTCOME": '{"transfer_complete": 0.9, "cancelled": 0.1}',
        "SANDBOX_SEATS_PER_ROW": "10000",
        "SANDBOX_SEED": "99",
        "SANDBOX_PAYMENT_ERROR_CODE": "PAYOUT_METHOD_NOT_CONFIGURED",
        "SANDBOX_PARTNERS": json.dumps([
            {"client_id": "p1", "client_secret": "s1"},
            {"client_id": "p2", "client_secret": "s2", "payment_configured": False},
        ]),
        "SANDBOX_FAULTS": '{"create_order": {"error_rate": 0.1}}',
    }
    config = SandboxConfig.from_env(env)
    assert config.quote_ttl_seconds == 1.5 and config.token_ttl_seconds == 60
    assert config.transfer_after_seconds is None
    assert config.transfer_outcome == {"transfer_complete": 0.9, "cancelled": 0.1}
    assert config.seats_per_row == 10_000 and config.seed == 99
    assert config.payment_error_code == "PAYOUT_METHOD_NOT_CONFIGURED"
    assert [p.client_id for p in config.partners] == ["p1", "p2"]
    assert config.partners[1].payment_configured is False
    assert config.faults == {"create_order": {"error_rate": 0.1}}
    assert SandboxConfig.from_env({"SANDBOX_TRANSFER_OUTCOME": "expire"}).transfer_outcome == "expire"
    assert SandboxConfig.from_env({}) == SandboxConfig()
    assert SandboxConfig.from_env({}, seed=5).seed == 5


@pytest.mark.parametrize("env", [
    {"SANDBOX_PARTNERS": "[]"},
    {"SANDBOX_PARTNERS": '[{"client_id": "x"}]'},
    {"SANDBOX_SEATS_PER_ROW": "0"},
    {"SANDBOX_QUOTE_TTL_SECONDS": "-1"},
    {"SANDBOX_TRANSFER_OUTCOME": "sometimes"},
])
def test_bad_env_is_rejected(env: dict) -> None:
    with pytest.raises(ValueError):
        SandboxConfig.from_env(env)


def test_cli_passes_host_port_and_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr("fulfilment.partners.tbb.sandbox.__main__.run", lambda *a, **kw: calls.append((a, kw)))
    monkeypatch.setenv("SANDBOX_QUOTE_TTL_SECONDS", "2")
    cli_main(["--port", "18999", "--seed", "4"])
    (host, port, config), kwargs = calls[0]
    assert (host, port) == ("127.0.0.1", 18999)
    assert config.quote_ttl_seconds == 2 and config.seed == 4


def test_patch_config_without_body_reads_it(sandbox: Sandbox) -> None:
    r = sandbox.client.patch("/admin/config")
    assert r.status_code == 200 and r.json()["quote_ttl_seconds"] == 3600
    assert sandbox.client.patch("/admin/config", json={}).json()["transfer_after_seconds"] == 30
