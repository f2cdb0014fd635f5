"""Helpers shared by the TBB sandbox unit tests (imported by conftest and the test modules).

``FakeClock`` lets a test move time forward instantly, so TTL/expiry/lifecycle tests need no sleeps.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.testclient import TestClient

from fulfilment.partners.sandbox_kit.clock import truncate_ms

SECRETS = {
    "partner-a": "sandbox-secret-a",
    "partner-b": "sandbox-secret-b",
    "partner-nopay": "sandbox-secret-nopay",
    "partner-suspended": "sandbox-secret-suspended",
}


class FakeClock:
    def __init__(self) -> None:
        self.now = truncate_ms(datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now = truncate_ms(self.now + timedelta(seconds=seconds))


class Sandbox:
    """A TestClient plus helpers for the common partner calls."""

    def __init__(self, client: TestClient, clock: FakeClock) -> None:
        self.client = client
        self.clock = clock
        self._tokens: dict[str, str] = {}

    @property
    def state(self) -> Any:
        return self.client.app.state.sandbox

    def token(self, partner: str = "partner-a") -> str:
        if partner not in self._tokens:
            r = self.client.post("/v1/auth/token", json={
                "client_id": partner, "client_secret": SECRETS[partner], "grant_type": "client_credentials"})
            assert r.status_code == 200, r.text
            self._tokens[partner] = r.json()["data"]["access_token"]
        return self._tokens[partner]

    def headers(self, partner: str = "partner-a") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(partner)}"}

    def get(self, path: str, partner: str = "partner-a", **kwargs: Any) -> Any:
        return self.client.get(path, headers=self.headers(partner), **kwargs)

    def post(self, path: str, body: Any, partner: str = "partner-a") -> Any:
        return self.client.post(path, json=body, headers=self.headers(partner))

    def quote(self, partner: str = "partner-a", event_id: str = "5496123", section_name: str = "101",
              row_name: str | None = "A", quantity: int = 2) -> Any:
        body: dict[str, Any] = {"event_id": event_id, "section_name": section_name, "quantity": quantity}
        if row_name is not None:
            body["row_name"] = row_name
        return self.post("/v1/quotes", body, partner)

    def quote_id(self, **kwargs: Any) -> str:
        r = self.quote(**kwargs)
        assert r.status_code == 201, r.text
        return r.json()["data"]["quote_id"]

    def deadline(self, days: float = 1) -> str:
        return (self.clock.now + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def order(self, quote_id: str, partner: str = "partner-a", delivery_type: str = "mobile_transfer",
              deadline: str | None = None) -> Any:
        return self.post("/v1/orders", {
            "quote_id": quote_id, "delivery_type": delivery_type,
            "delivery_deadline": deadline or self.deadline()}, partner)




def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    assert set(body["meta"]) == {"request_id", "timestamp"}
    return body["error"]
