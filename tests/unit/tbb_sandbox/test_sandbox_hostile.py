"""The hostile-partner faults (issue 7): unreliable order lookups, expiry checked before
consumption, answers held back after the commit, stalling requests. In-process (TestClient, fake
clock); the over-the-wire timeouts are in test_sandbox_server."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sandbox_testkit import Sandbox, assert_error

from fulfilment.partners.tbb.sandbox.faults import MALFORMED_KINDS, FaultRule


def _set_faults(sandbox: Sandbox, rules: dict) -> dict:
    r = sandbox.client.put("/admin/faults", json=rules)
    assert r.status_code == 200, r.text
    return r.json()


def _counters(sandbox: Sandbox, endpoint: str) -> dict:
    return sandbox.client.get("/admin/faults").json()["counters"].get(endpoint, {})


def _ordered_quote(sandbox: Sandbox) -> tuple[str, str]:
    quote_id = sandbox.quote_id()
    r = sandbox.order(quote_id)
    assert r.status_code == 201, r.text
    return quote_id, r.json()["data"]["order_id"]


def _lookup(sandbox: Sandbox, quote_id: str, **params: object):
    return sandbox.get("/v1/orders", params={"quote_id": quote_id, **params})


def _found(sandbox: Sandbox, quote_id: str) -> list[str]:
    r = _lookup(sandbox, quote_id)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["pagination"]["has_more"] is False
    assert body["pagination"]["total"] == len(body["data"])
    return [o["order_id"] for o in body["data"]]


# --- lookups that lag, miss, paginate or break ---------------------------------------------------

def test_lookup_lag_hides_recent_orders_until_they_age(sandbox: Sandbox) -> None:
    _set_faults(sandbox, {"list_orders": {"lookup_lag_seconds": 5}})
    quote_id, order_id = _ordered_quote(sandbox)
    assert _found(sandbox, quote_id) == []  # a clean, well-formed "no order": the trap
    # The order exists everywhere else: its status read and the admin view.
    assert sandbox.get(f"/v1/orders/{order_id}").status_code == 200
    assert sandbox.client.get("/admin/orders", params={"quote_id": quote_id}).json()["count"] == 1
    sandbox.clock.advance(4.9)
    assert _found(sandbox, quote_id) == []
    sandbox.clock.advance(0.1)
    assert _found(sandbox, quote_id) == [order_id]
    assert _counters(sandbox, "list_orders") == {"lookup_lag": 2}


def test_lookup_lag_applies_to_the_unfiltered_list_too(sandbox: Sandbox) -> None:
    _, old = _ordered_quote(sandbox)
    sandbox.clock.advance(10)
    _set_faults(sandbox, {"list_orders": {"lookup_lag_seconds": 5}})
    _ordered_quote(sandbox)
    body = sandbox.get("/v1/orders").json()
    assert [o["order_id"] for o in body["data"]] == [old] and body["pagination"]["total"] == 1


def test_lookup_miss_rate_one_always_misses(sandbox: Sandbox) -> None:
    quote_id, order_id = _ordered_quote(sandbox)
    _set_faults(sandbox, {"list_orders": {"lookup_miss_rate": 1.0}})
    assert _found(sandbox, quote_id) == []
    assert _found(sandbox, quote_id) == []
    assert _counters(sandbox, "list_orders") == {"lookup_miss": 2}
    _set_faults(sandbox, {"list_orders": {"lookup_miss_rate": 0}})
    assert _found(sandbox, quote_id) == [order_id]


def test_lookup_miss_rate_mixes_hits_and_misses(make_sandbox) -> None:
    sandbox = make_sandbox(seed=5)
    quote_id, order_id = _ordered_quote(sandbox)
    _set_faults(sandbox, {"list_orders": {"lookup_miss_rate": 0.5}})
    answers = [tuple(_found(sandbox, quote_id)) for _ in range(20)]
    assert set(answers) == {(), (order_id,)}
    assert _counters(sandbox, "list_orders")["lookup_miss"] == answers.count(())


def test_lookup_has_more_announces_another_page(sandbox: Sandbox) -> None:
    quote_id, order_id = _ordered_quote(sandbox)
    _set_faults(sandbox, {"list_orders": {"lookup_has_more_rate": 1.0}})
    r = _lookup(sandbox, quote_id)
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True and body["data"] == []
    assert body["pagination"] == {"total": 1, "limit": 20, "offset": 0, "has_more": True}
    assert set(body["meta"]) == {"request_id", "timestamp"}
    # Also when there is no order at all, and on a later page: has_more stays consistent with total.
    body = _lookup(sandbox, "qt_nothing", offset=3).json()
    assert body["data"] == [] and body["pagination"]["has_more"] is True and body["pagination"]["total"] > 3
    assert _counters(sandbox, "list_orders") == {"lookup_has_more": 2}
    _set_faults(sandbox, {})
    assert _found(sandbox, quote_id) == [order_id]


def test_lookup_has_more_next_announces_another_page_exactly_n_times(sandbox: Sandbox) -> None:
    quote_id, order_id = _ordered_quote(sandbox)
    _set_faults(sandbox, {"list_orders": {"lookup_has_more_next": 2}})
    pages = [_lookup(sandbox, quote_id).json() for _ in range(3)]
    assert [page["pagination"]["has_more"] for page in pages] == [True, True, False]
    assert [page["data"] for page in pages[:2]] == [[], []]
    assert [order["order_id"] for order in pages[2]["data"]] == [order_id]
    assert _counters(sandbox, "list_orders") == {"lookup_has_more": 2}
    assert sandbox.client.get("/admin/faults").json()["rules"]["list_orders"]["lookup_has_more_next"] == 0


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_lookup_malformed_bodies(sandbox: Sandbox, kind: str) -> None:
    quote_id, order_id = _ordered_quote(sandbox)
    _set_faults(sandbox, {"list_orders": {"lookup_malformed_rate": 1.0, "lookup_malformed_kinds": [kind]}})
    r = _lookup(sandbox, quote_id)
    assert r.status_code == 200
    if kind == "not_json":
        assert r.headers["content-type"].startswith("text/html")
        with pytest.raises(ValueError):
            r.json()
    else:
        body = r.json()
        if kind == "success_missing":
            assert "success" not in body and [o["order_id"] for o in body["data"]] == [order_id]
        elif kind == "data_not_list":
            assert body["success"] is True and isinstance(body["data"], dict)
        elif kind == "data_null":
            assert body["success"] is True and body["data"] is None
        elif kind == "pagination_missing":
            assert "pagination" not in body and [o["order_id"] for o in body["data"]] == [order_id]
        elif kind == "has_more_not_bool":
            assert body["pagination"]["has_more"] == "false"
    assert _counters(sandbox, "list_orders") == {"lookup_malformed": 1, f"malformed_{kind}": 1}


def test_lookup_malformed_default_kinds_vary(make_sandbox) -> None:
    sandbox = make_sandbox(seed=2)
    quote_id, _ = _ordered_quote(sandbox)
    _set_faults(sandbox, {"list_orders": {"lookup_malformed_rate": 1.0}})
    for _ in range(30):
        assert _lookup(sandbox, quote_id).status_code == 200
    counters = _counters(sandbox, "list_orders")
    assert counters["lookup_malformed"] == 30
    assert {k.removeprefix("malformed_") for k in counters if k.startswith("malformed_")} == set(MALFORMED_KINDS)


def test_lookup_faults_only_after_the_token_is_accepted(sandbox: Sandbox) -> None:
    _set_faults(sandbox, {"list_orders": {"lookup_malformed_rate": 1.0, "lookup_has_more_rate": 1.0}})
    assert_error(sandbox.client.get("/v1/orders", params={"quote_id": "qt_x"}), 401, "UNAUTHORIZED")
    assert _counters(sandbox, "list_orders") == {}


def test_lookup_faults_on_wildcard_only_touch_list_orders(sandbox: Sandbox) -> None:
    quote_id, order_id = _ordered_quote(sandbox)
    _set_faults(sandbox, {"*": {"lookup_miss_rate": 1.0, "lookup_malformed_rate": 0}})
    assert sandbox.get(f"/v1/orders/{order_id}").json()["data"]["order_id"] == order_id
    assert _found(sandbox, quote_id) == []


# --- expiry checked before consumption -----------------------------------------------------------

def test_expiry_checked_first_on_a_consumed_and_expired_quote(make_sandbox) -> None:
    sandbox = make_sandbox(quote_ttl_seconds=60)
    quote_id, _ = _ordered_quote(sandbox)
    sandbox.clock.advance(61)
    # Default: consumption wins.
    assert_error(sandbox.order(quote_id), 422, "QUOTE_ALREADY_CONSUMED")
    _set_faults(sandbox, {"create_order": {"expiry_checked_first": True}})
    error = assert_error(sandbox.order(quote_id), 422, "QUOTE_EXPIRED")
    assert error["details"]["quote_id"] == quote_id and error["details"]["expired_at"]
    assert _counters(sandbox, "create_order") == {"expiry_checked_first": 1}
    assert sandbox.client.get("/admin/stats").json()["orders_total"] == 1


def test_expiry_checked_first_changes_nothing_else(make_sandbox) -> None:
    sandbox = make_sandbox(quote_ttl_seconds=60)
    _set_faults(sandbox, {"*": {"expiry_checked_first": True}})
    consumed, _ = _ordered_quote(sandbox)
    assert_error(sandbox.order(consumed), 422, "QUOTE_ALREADY_CONSUMED")  # not expired yet
    unused = sandbox.quote_id(row_name="B")
    sandbox.clock.advance(61)
    assert_error(sandbox.order(unused), 422, "QUOTE_EXPIRED")  # expired either way: not counted
    assert _counters(sandbox, "create_order") == {}


# --- answers held back after the commit ----------------------------------------------------------

def test_respond_after_commit_holds_a_committed_answer(sandbox: Sandbox) -> None:
    quote_id = sandbox.quote_id()
    _set_faults(sandbox, {"create_order": {"respond_after_commit_ms": 200}})
    started = time.perf_counter()
    r = sandbox.order(quote_id)
    assert time.perf_counter() - started >= 0.2
    assert r.status_code == 201 and r.json()["data"]["quote_id"] == quote_id
    assert _counters(sandbox, "create_order") == {"respond_after_commit": 1}
    # Refusals are not held back (nothing was committed).
    assert_error(sandbox.order(quote_id), 422, "QUOTE_ALREADY_CONSUMED")
    assert _counters(sandbox, "create_order") == {"respond_after_commit": 1}


def test_respond_after_commit_does_not_delay_quotes(sandbox: Sandbox) -> None:
    _set_faults(sandbox, {"*": {"respond_after_commit_ms": 500}})
    sandbox.quote_id()  # also a 201, but not create_order
    assert _counters(sandbox, "create_quote") == {}


# --- stalls --------------------------------------------------------------------------------------

def test_stall_next_on_the_token_endpoint(sandbox: Sandbox) -> None:
    snapshot = _set_faults(sandbox, {"auth_token": {"stall_next": 1, "stall_ms": 200}})
    assert snapshot["rules"]["auth_token"]["stall_next"] == 1
    started = time.perf_counter()
    sandbox.token()  # stalled, then answered normally
    assert time.perf_counter() - started >= 0.2
    sandbox.token("partner-b")  # stall_next counted down: answered at once
    assert _counters(sandbox, "auth_token") == {"stall": 1}
    assert sandbox.client.get("/admin/faults").json()["rules"]["auth_token"]["stall_next"] == 0


def test_stall_then_fail_next_on_the_same_request(sandbox: Sandbox) -> None:
    _set_faults(sandbox, {"auth_token": {"stall_next": 1, "stall_ms": 50, "fail_next": 1,
                                         "error_statuses": [503], "plain_body_rate": 0}})
    r = sandbox.client.post("/v1/auth/token", json={})
    assert_error(r, 503, "SERVICE_UNAVAILABLE")
    assert _counters(sandbox, "auth_token") == {"stall": 1, "fail_next": 1, "error": 1, "error_503": 1}


def test_latency_applies_to_the_token_endpoint(sandbox: Sandbox) -> None:
    _set_faults(sandbox, {"auth_token": {"latency_ms": 150}})
    started = time.perf_counter()
    sandbox.token()
    assert time.perf_counter() - started >= 0.15
    assert _counters(sandbox, "auth_token") == {"latency": 1}


# --- validation and reset ------------------------------------------------------------------------

def test_every_new_field_round_trips_on_the_wildcard(sandbox: Sandbox) -> None:
    rule: dict[str, Any] = {"stall_next": 2, "stall_ms": 10, "respond_after_commit_ms": 5, "expiry_checked_first": True,
            "lookup_lag_seconds": 1.5, "lookup_miss_rate": 0.1, "lookup_has_more_rate": 0.2,
            "lookup_malformed_rate": 0.3, "lookup_malformed_kinds": ["data_null"]}
    snapshot = _set_faults(sandbox, {"*": rule})
    assert snapshot["rules"]["*"] == FaultRule(**rule).to_json()


@pytest.mark.parametrize(
    "rules",
    [
        {"create_order": {"lookup_lag_seconds": 1}},
        {"get_order": {"lookup_miss_rate": 0.5}},
        {"create_order": {"lookup_malformed_kinds": ["data_null"]}},
        {"list_orders": {"respond_after_commit_ms": 10}},
        {"list_orders": {"expiry_checked_first": True}},
        {"create_order": {"expiry_checked_first": "yes"}},
        {"create_order": {"expiry_checked_first": 1}},
        {"list_orders": {"lookup_lag_seconds": -1}},
        {"list_orders": {"lookup_miss_rate": 2}},
        {"list_orders": {"lookup_has_more_rate": -0.1}},
        {"list_orders": {"lookup_has_more_next": -1}},
        {"list_orders": {"lookup_has_more_next": 1.5}},
        {"get_order": {"lookup_has_more_next": 1}},
        {"list_orders": {"lookup_malformed_rate": "often"}},
        {"list_orders": {"lookup_malformed_kinds": []}},
        {"list_orders": {"lookup_malformed_kinds": ["truncated"]}},
        {"create_order": {"respond_after_commit_ms": -5}},
        {"auth_token": {"stall_next": 1}},
        {"auth_token": {"stall_next": 1.5, "stall_ms": 10}},
        {"auth_token": {"stall_ms": -1}},
    ],
)
def test_invalid_new_rules_are_rejected(sandbox: Sandbox, rules) -> None:
    _set_faults(sandbox, {"get_event": {"latency_ms": 1}})
    r = sandbox.client.put("/admin/faults", json=rules)
    assert r.status_code == 400 and "error" in r.json()
    assert set(sandbox.client.get("/admin/faults").json()["rules"]) == {"get_event"}


def test_defaults_are_accepted_on_any_endpoint(sandbox: Sandbox) -> None:
    """A create_order/list_orders field set to its default is no misplaced fault: accepted on any
    endpoint, stored as the default rule, and the endpoint then answers as without a rule."""
    _set_faults(sandbox, {"get_event": {"expiry_checked_first": False, "lookup_miss_rate": 0, "stall_ms": 0}})
    assert sandbox.client.get("/admin/faults").json()["rules"] == {"get_event": FaultRule().to_json()}
    started = time.monotonic()
    r = sandbox.get("/v1/events/5496123")
    assert r.status_code == 200 and r.json()["data"]["event_id"] in (5496123, "5496123"), r.text
    assert time.monotonic() - started < 1.0  # no stall
    assert _counters(sandbox, "get_event") == {}


def test_delete_and_reset_clear_the_new_faults(make_sandbox) -> None:
    sandbox = make_sandbox(quote_ttl_seconds=60)
    quote_id, order_id = _ordered_quote(sandbox)
    hostile = {"list_orders": {"lookup_miss_rate": 1.0},
               "create_order": {"expiry_checked_first": True, "respond_after_commit_ms": 300}}
    _set_faults(sandbox, hostile)
    assert _found(sandbox, quote_id) == []
    sandbox.client.delete("/admin/faults")
    assert _found(sandbox, quote_id) == [order_id]
    sandbox.clock.advance(61)
    assert_error(sandbox.order(quote_id), 422, "QUOTE_ALREADY_CONSUMED")

    _set_faults(sandbox, hostile)
    assert sandbox.client.post("/admin/reset").json() == {"ok": True}
    faults = sandbox.client.get("/admin/faults").json()
    assert faults["rules"] == {} and faults["counters"] == {}
    sandbox._tokens.clear()  # reset forgot every token
    assert sandbox.order(sandbox.quote_id()).status_code == 201
    assert sandbox.client.get("/admin/faults").json()["counters"] == {}


def test_start_up_config_carries_the_new_faults(make_sandbox) -> None:
    sandbox = make_sandbox(faults={"list_orders": {"lookup_has_more_rate": 1.0}})
    quote_id, _ = _ordered_quote(sandbox)
    assert _lookup(sandbox, quote_id).json()["pagination"]["has_more"] is True
