"""The SafeTix refresh endpoint follows TM_BASE_URL: production's path for a production base URL,
the seed's pre-production path (`/marketplace-staging/v1/securerender`) for a pre-production one
(the public reference's staging base, `/partners-sandbox/v1`), unless TM_SECURE_RENDER_URL says."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import respx

from fulfilment.partners.ticketmaster import assumed
from fulfilment.partners.ticketmaster.flow import build
from fulfilment.partners.ticketmaster.payloads import Device, RenderTicket
from fulfilment.settings import Settings, get_settings
from tests.unit.test_tm_api_payloads import SECURE_RENDER_OK

TM = {
    "DATABASE_URL": "postgresql://u:p@127.0.0.1:5432/db", "BROKER_URL": "amqp://u:p@127.0.0.1:5672/%2F",
    "TBB_ENABLED": "false", "TM_ENABLED": "true", "TM_APIKEY": "GkB8Z037ZfqbLCNtZViAgrEegbsrZ6Ne",
    "TM_DEVICE_ID": "dev-1", "TM_BILLING_FIRST_NAME": "Tom", "TM_BILLING_LAST_NAME": "Brown",
    "TM_BILLING_EMAIL": "t@example.com", "TM_BILLING_PHONE": "4110001234", "TM_PAYMENT_NONCE": "fake-valid-visa-nonce",
    "TICKET_KEY": "c2FuZGJveC1vbmx5LXRpY2tldC1rZXktbm90LXJlYWw=",
}


@pytest.fixture
def tm_env(monkeypatch: pytest.MonkeyPatch, tmp_path):  # type: ignore[no-untyped-def]
    for name in (*Settings.model_fields,):
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)  # no .env
    for name, value in TM.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def settings_with(env: pytest.MonkeyPatch, **values: str) -> Settings:
    for name, value in values.items():
        env.setenv(name, value)
    get_settings.cache_clear()
    return get_settings()


@pytest.mark.parametrize(("base", "render"), [
    ("https://app.ticketmaster.com/partners/v1", "https://app.ticketmaster.com/marketplace/v1/securerender"),
    ("https://app.ticketmaster.com/partners-sandbox/v1",
     "https://app.ticketmaster.com/marketplace-staging/v1/securerender"),
    ("https://app.ticketmaster.com/partners-staging/v1/",
     "https://app.ticketmaster.com/marketplace-staging/v1/securerender"),
    ("https://app-preprod.ticketmaster.com/partners/v1",
     "https://app-preprod.ticketmaster.com/marketplace-staging/v1/securerender"),
    ("http://127.0.0.1:18090/partners/v1", "http://127.0.0.1:18090/marketplace/v1/securerender"),  # our sandbox
    ("https://contest.ticketmaster.com/partners/v1", "https://contest.ticketmaster.com/marketplace/v1/securerender"),
])
def test_the_default_follows_the_base_url(tm_env: pytest.MonkeyPatch, base: str, render: str) -> None:
    assert assumed.secure_render_url(base) == render
    assert str(settings_with(tm_env, TM_BASE_URL=base).tm_secure_render_url) == render


def test_a_configured_url_wins(tm_env: pytest.MonkeyPatch) -> None:
    settings = settings_with(tm_env, TM_BASE_URL="https://app.ticketmaster.com/partners-sandbox/v1",
                             TM_SECURE_RENDER_URL="https://render.example/marketplace/v1/securerender")
    assert str(settings.tm_secure_render_url) == "https://render.example/marketplace/v1/securerender"


@respx.mock
def test_a_preproduction_worker_refreshes_tokens_on_the_staging_path(tm_env: pytest.MonkeyPatch) -> None:
    """The flow the workers build from settings calls the staging SecureRender, not production's."""
    settings = settings_with(tm_env, TM_BASE_URL="https://app.ticketmaster.com/partners-sandbox/v1")
    staging = respx.post("https://app.ticketmaster.com/marketplace-staging/v1/securerender").mock(
        return_value=httpx.Response(200, json=SECURE_RENDER_OK))
    production = respx.post("https://app.ticketmaster.com/marketplace/v1/securerender").mock(
        return_value=httpx.Response(200, json=SECURE_RENDER_OK))
    flow = build(settings)
    answer = flow.api.secure_render("783412345", Device("d-1", "native", "ios", "ua"),
                                    [RenderTicket("3F005237E5CB39EA", "G", "17", "1", "964537283421")],
                                    request_id="r", deadline=time.monotonic() + 30)
    assert answer.tickets[0].token is not None
    assert staging.call_count == 1 and production.call_count == 0
    sent = staging.calls.last.request
    assert sent.url.params["apikey"] == TM["TM_APIKEY"] and json.loads(sent.content)["tickets"][0]["barcode"] == "964537283421"
