"""Fault injection through the admin API (TestClient; the real-socket drop is in test_sandbox_server)."""

from __future__ import annotations

import time

import pytest
from sandbox_testkit import Sandbox, assert_error

from fulfilment.partners.sandbox_kit.faults import ConnectionDropped
from fulfilment.partners.tbb.sandbox.faults import FaultRule


def _set_faults(sandbox: Sandbox, rules: dict) -> dict:
    r = sandbox.client.put("/admin/faults", json=rules)
    assert r.status_code == 200, r.text
    return r.json()


def _counters(sandbox: Sandbox) -> dict:
    return sandbox.client.get("/admin/faults").json()["counters"]


@pytest.mark.parametrize("status, code", [(500, "INTERNAL_ERROR"), (502, "BAD_GATEWAY"),
                                          (503, "SERVICE_UNAVAILABLE"), (504, "GATEWAY_TIMEOUT")])
def test_error_rate_with_envelope(sandbox: Sandbox, status: int, code: str) -> None:
    sandbox.token()  # before the fault, so auth itself is not hit
    _set_faults(sandbox, {"list_events": {"error_rate": 1.0, "error_statuses": [status], "plain_body_rate": 0}})
    r = sandbox.get("/v1/events")
    assert_error(r, status, code)
    assert _counters(sandbox)["list_events"] == {"error": 1, f"error_{status}": 1}


@pytest.mark.parametrize("status, media_type", [(500, "text/plain"), (502, "text/html"),
                                                (503, "text/plain"), (504, "text/html")])
def test_error_rate_with_plain_body(sandbox: Sandbox, status: int, media_type: str) -> None:
    sandbox.token()
    _set_faults(sandbox, {"get_event": {"error_rate": 1.0, "error_statuses": [status], "plain_body_rate": 1}})
    r = sandbox.get("/v1/events/5496123")
    assert r.status_code == status
    assert r.headers["content-type"].startswith(media_type)
    with pytest.raises(ValueError):
        r.json()
    assert _counters(sandbox)["get_event"]["plain_body"] == 1


def test_plain_body_rate_mixes_bodies(make_sandbox) -> None:
    sandbox = make_sandbox(seed=3)
    sandbox.token()
    _set_faults(sandbox, {"list_events": {"error_rate": 1.0, "error_statuses": [502]}})  # default 0.5
    kinds = {sandbox.get("/v1/events").headers["content-type"].split(";")[0] for _ in range(20)}
    assert kinds == {"application/json", "text/html"}


def test_rate_limited_with_retry_after(sandbox: Sandbox) -> None:
    sandbox.token()
    _set_faults(sandbox, {"create_quote": {"rate_limit_rate": 1.0, "retry_after_seconds": 2}})
    r = sandbox.quote()
    error = assert_error(r, 429, "RATE_LIMITED")
    assert r.headers["Retry-After"] == "2"
    assert error["details"] == {"retry_after_seconds": 2}
    _set_faults(sandbox, {"create_quote": {"rate_limit_rate": 1.0, "retry_after_seconds": 0.25}})
    assert sandbox.quote().headers["Retry-After"] == "0.25"
    assert _counters(sandbox)["create_quote"]["rate_limited"] == 2
    # Nothing was created by the rejected calls.
    assert sandbox.client.get("/admin/quotes").json()["count"] == 0


def test_default_retry_after_is_one_second(sandbox: Sandbox) -> None:
    _set_faults(sandbox, {"auth_token": {"rate_limit_rate": 1.0}})
    r = sandbox.client.post("/v1/auth/token", json={})
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"


def test_fail_next_then_recover(sandbox: Sandbox) -> None:
    quote_id = sandbox.quote_id()
    _set_faults(sandbox, {"create_order": {"fail_next": 3, "error_statuses": [503], "plain_body_rate": 0}})
    for _ in range(3):
        assert_error(sandbox.order(quote_id), 503, "SERVICE_UNAVAILABLE")
    # The injected failures committed nothing: the quote is still usable.
    assert sandbox.order(quote_id).status_code == 201
    counters = _counters(sandbox)["create_order"]
    assert counters["fail_next"] == 3 and counters["error_503"] == 3
    assert sandbox.client.get("/admin/faults").json()["rules"]["create_order"]["fail_next"] == 0


def test_fail_next_with_429(sandbox: Sandbox) -> None:
    sandbox.token()
    _set_faults(sandbox, {"list_events": {"fail_next": 1, "error_statuses": [429], "retry_after_seconds": 3}})
    r = sandbox.get("/v1/events")
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert sandbox.get("/v1/events").status_code == 200


def test_wildcard_rule_and_endpoint_override(sandbox: Sandbox) -> None:
    sandbox.token()
    _set_faults(sandbox, {"*": {"error_rate": 1.0, "error_statuses": [500], "plain_body_rate": 0},
                          "get_event": {}})
    assert sandbox.get("/v1/events").status_code == 500
    assert sandbox.get("/v1/events/5496123").status_code == 200  # own (empty) rule wins over "*"
    assert sandbox.client.get("/healthz").status_code == 200  # not a partner endpoint
    assert sandbox.client.get("/admin/stats").status_code == 200


def test_latency(sandbox: Sandbox) -> None:
    sandbox.token()
    _set_faults(sandbox, {"list_events": {"latency_ms": 150}})
    started = time.perf_counter()
    assert sandbox.get("/v1/events").status_code == 200
    assert time.perf_counter() - started >= 0.15
    assert _counters(sandbox)["list_events"]["latency"] == 1


def test_drop_after_commit_in_process(sandbox: Sandbox) -> None:
    """In-process the drop surfaces as ConnectionDropped; over a socket it is a transport error."""
    quote_id = sandbox.quote_id()
    _set_faults(sandbox, {"create_order": {"drop_after_commit_rate": 1.0}})
    with pytest.raises(ConnectionDropped):
        sandbox.order(quote_id)
    orders = sandbox.client.get("/admin/orders", params={"quote_id": quote_id}).json()
    assert orders["count"] == 1
    assert _counters(sandbox)["create_order"] == {"drop_after_commit": 1}
    # Failed business calls are never dropped (there was nothing to commit).
    assert_error(sandbox.order(quote_id), 422, "QUOTE_ALREADY_CONSUMED")


def test_drop_next_drops_exactly_n(sandbox: Sandbox) -> None:
    _set_faults(sandbox, {"create_order": {"drop_next": 1}})
    with pytest.raises(ConnectionDropped):
        sandbox.order(sandbox.quote_id())
    assert sandbox.order(sandbox.quote_id()).status_code == 201


def test_delete_clears_rules_but_keeps_counters(sandbox: Sandbox) -> None:
    sandbox.token()
    _set_faults(sandbox, {"list_events": {"error_rate": 1.0}})
    sandbox.get("/v1/events")
    r = sandbox.client.delete("/admin/faults")
    assert r.status_code == 200
    assert r.json()["rules"] == {} and r.json()["counters"]["list_events"]["error"] == 1
    assert sandbox.get("/v1/events").status_code == 200
    stats = sandbox.client.get("/admin/stats").json()
    assert stats["faults"]["totals"]["error"] == 1
    assert stats["requests"]["list_events"] == 2


def test_put_replaces_all_rules(sandbox: Sandbox) -> None:
    _set_faults(sandbox, {"list_events": {"error_rate": 1.0}})
    snapshot = _set_faults(sandbox, {"get_order": {"latency_ms": 5}})
    assert set(snapshot["rules"]) == {"get_order"}
    assert snapshot["rules"]["get_order"] == FaultRule(latency_ms=5).to_json()


@pytest.mark.parametrize(
    "rules",
    [
        {"no_such_endpoint": {}},
        {"list_events": {"error_rate": 1.5}},
        {"list_events": {"error_statuses": [418]}},
        {"list_events": {"error_statuses": []}},
        {"list_events": {"fail_next": -1}},
        {"list_events": {"latency_ms": "slow"}},
        {"list_events": {"bogus": 1}},
        {"list_events": {"drop_after_commit_rate": 1.0}},
        {"list_events": "everything"},
        ["not", "an", "object"],
    ],
)
def test_invalid_rules_are_rejected_atomically(sandbox: Sandbox, rules) -> None:
    _set_faults(sandbox, {"get_event": {"latency_ms": 1}})
    r = sandbox.client.put("/admin/faults", json=rules)
    assert r.status_code == 400 and "error" in r.json()
    assert set(sandbox.client.get("/admin/faults").json()["rules"]) == {"get_event"}


def test_start_up_faults_from_config(make_sandbox) -> None:
    sandbox = make_sandbox(faults={"list_events": {"fail_next": 1, "error_statuses": [502], "plain_body_rate": 0}})
    sandbox.token()
    assert_error(sandbox.get("/v1/events"), 502, "BAD_GATEWAY")
    assert sandbox.get("/v1/events").status_code == 200
