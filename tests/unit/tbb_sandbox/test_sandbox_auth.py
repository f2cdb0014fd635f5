"""Authentication, envelopes, request ids and routing errors."""

from __future__ import annotations

import re
import time
import uuid

import pytest
from sandbox_testkit import Sandbox, assert_error

from fulfilment.partners.sandbox_kit.clock import parse_iso_utc
from fulfilment.partners.tbb.sandbox import SandboxConfig

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")


def _token_request(sandbox: Sandbox, **body: object):
    payload = {"client_id": "partner-a", "client_secret": "sandbox-secret-a", "grant_type": "client_credentials"}
    payload.update(body)
    return sandbox.client.post("/v1/auth/token", json={k: v for k, v in payload.items() if v is not None})


def test_token_success_shape(sandbox: Sandbox) -> None:
    r = _token_request(sandbox)
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True
    data = body["data"]
    assert set(data) == {"access_token", "token_type", "expires_at", "expires_in", "scope"}
    assert data["access_token"].startswith("tbb_") and len(data["access_token"]) > 20
    assert data["token_type"] == "Bearer"
    assert data["expires_in"] == 3600
    assert data["scope"] == "events:read quotes:write orders:write"
    assert TIMESTAMP.match(data["expires_at"])
    assert (parse_iso_utc(data["expires_at"]) - sandbox.clock.now).total_seconds() == 3600
    assert set(body["meta"]) == {"request_id", "timestamp"}
    assert TIMESTAMP.match(body["meta"]["timestamp"])


def test_tokens_are_opaque_and_distinct(sandbox: Sandbox) -> None:
    tokens = {_token_request(sandbox).json()["data"]["access_token"] for _ in range(5)}
    assert len(tokens) == 5


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"client_secret": "wrong"}, 401, "INVALID_CREDENTIALS"),
        ({"client_id": "nobody"}, 401, "INVALID_CREDENTIALS"),
        ({"client_secret": "sandbox-secret-b"}, 401, "INVALID_CREDENTIALS"),  # another partner's secret
        ({"grant_type": "password"}, 400, "UNSUPPORTED_GRANT_TYPE"),
        ({"client_id": "partner-suspended", "client_secret": "sandbox-secret-suspended"}, 403, "ACCOUNT_SUSPENDED"),
    ],
)
def test_token_errors(sandbox: Sandbox, body: dict, status: int, code: str) -> None:
    assert_error(_token_request(sandbox, **body), status, code)


def test_suspension_is_not_revealed_without_the_secret(sandbox: Sandbox) -> None:
    r = _token_request(sandbox, client_id="partner-suspended", client_secret="guess")
    assert_error(r, 401, "INVALID_CREDENTIALS")


def test_token_validation_errors(sandbox: Sandbox) -> None:
    r = sandbox.client.post("/v1/auth/token", json={"grant_type": "client_credentials"})
    error = assert_error(r, 400, "VALIDATION_ERROR")
    assert {e["field"] for e in error["details"]["errors"]} == {"client_id", "client_secret"}
    r = sandbox.client.post("/v1/auth/token", content=b"client_id=a", headers={"Content-Type": "text/plain"})
    assert_error(r, 400, "VALIDATION_ERROR")
    r = sandbox.client.post("/v1/auth/token", json=["not", "an", "object"])
    assert_error(r, 400, "VALIDATION_ERROR")


def test_nopay_partner_can_authenticate(sandbox: Sandbox) -> None:
    r = _token_request(sandbox, client_id="partner-nopay", client_secret="sandbox-secret-nopay")
    assert r.status_code == 200


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic abc", "Bearer tbb_unknown", "tbb_x"])
def test_missing_or_invalid_token_is_unauthorized(sandbox: Sandbox, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    assert_error(sandbox.client.get("/v1/events", headers=headers), 401, "UNAUTHORIZED")


def test_bearer_scheme_is_case_insensitive(sandbox: Sandbox) -> None:
    r = sandbox.client.get("/v1/events", headers={"Authorization": f"bearer {sandbox.token()}"})
    assert r.status_code == 200


def test_token_expires_after_ttl(make_sandbox) -> None:
    sandbox = make_sandbox(token_ttl_seconds=60)
    headers = sandbox.headers()
    sandbox.clock.advance(59.9)
    assert sandbox.client.get("/v1/events", headers=headers).status_code == 200
    sandbox.clock.advance(0.1)
    error = assert_error(sandbox.client.get("/v1/events", headers=headers), 401, "TOKEN_EXPIRED")
    assert "expired_at" in error["details"]
    # Re-authenticating gives a working token again (no refresh endpoint).
    fresh = _token_request(sandbox).json()["data"]["access_token"]
    assert sandbox.client.get("/v1/events", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200


def test_token_expiry_with_real_time_and_fractional_ttl() -> None:
    from starlette.testclient import TestClient

    from fulfilment.partners.tbb.sandbox import create_app

    client = TestClient(create_app(SandboxConfig(token_ttl_seconds=0.2)))
    r = client.post("/v1/auth/token", json={
        "client_id": "partner-a", "client_secret": "sandbox-secret-a", "grant_type": "client_credentials"})
    data = r.json()["data"]
    assert data["expires_in"] == 1  # integer like the docs; expires_at is exact
    headers = {"Authorization": f"Bearer {data['access_token']}"}
    assert client.get("/v1/events", headers=headers).status_code == 200
    time.sleep(0.25)
    assert_error(client.get("/v1/events", headers=headers), 401, "TOKEN_EXPIRED")


def test_runtime_token_ttl_change_applies_to_new_tokens(sandbox: Sandbox) -> None:
    assert sandbox.client.patch("/admin/config", json={"token_ttl_seconds": 5}).status_code == 200
    data = _token_request(sandbox).json()["data"]
    assert data["expires_in"] == 5


def test_request_id_is_echoed(sandbox: Sandbox) -> None:
    rid = str(uuid.uuid4())
    r = sandbox.client.get("/v1/events", headers={**sandbox.headers(), "X-Request-ID": rid})
    assert r.headers["X-Request-ID"] == rid
    assert r.json()["meta"]["request_id"] == rid
    # Errors echo it too.
    r = sandbox.client.get("/v1/events", headers={"X-Request-ID": rid})
    assert r.headers["X-Request-ID"] == rid and r.json()["meta"]["request_id"] == rid


def test_request_id_is_generated_when_absent(sandbox: Sandbox) -> None:
    r = sandbox.client.get("/v1/events", headers=sandbox.headers())
    rid = r.json()["meta"]["request_id"]
    assert uuid.UUID(rid) and r.headers["X-Request-ID"] == rid


def test_unknown_route_and_method_use_the_error_envelope(sandbox: Sandbox) -> None:
    assert_error(sandbox.client.get("/v1/nope"), 404, "NOT_FOUND")
    assert_error(sandbox.client.delete("/v1/quotes"), 405, "METHOD_NOT_ALLOWED")


def test_healthz(sandbox: Sandbox) -> None:
    r = sandbox.client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"ok": True}


def test_secrets_and_tokens_are_never_logged(sandbox: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    token = sandbox.token()
    sandbox.client.get("/v1/events?q=Patriots", headers={"Authorization": f"Bearer {token}"})
    _token_request(sandbox, client_secret="wrong-secret-value")
    text = caplog.text
    assert "/v1/auth/token" in text and "/v1/events" in text
    assert "sandbox-secret-a" not in text and "wrong-secret-value" not in text and token not in text
