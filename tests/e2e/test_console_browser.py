"""The web console in a real browser: Debian's headless Chromium driven by Playwright, against the
real `fulfil console` process, real workers and scheduler, Postgres, RabbitMQ and the sandbox.

A purchase is stalled for real (the sandbox refuses every quote until the workers give up); a
viewer sees it but cannot act, a forged POST without the CSRF token is refused, and an operator
logs in, finds it, retries it and watches it complete.  The tests run in this order on one
stalled purchase: the last one resolves it.

Screenshots of the dashboard, the dead letters and the purchase page (stalled, then complete) go to
$FULFIL_SCREENSHOT_DIR (scripts/screenshots.py sets it to docs/screenshots), else next to the
test logs.
"""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fulfilment.console.auth import hash_password
from fulfilment.db import session_scope
from fulfilment.state_machine import history
from tests.support.factories import reload, request
from tests.support.pipeline import Pipeline, in_states, start_pipeline, wait_until
from tests.support.processes import ManagedProcess
from tests.support.sandbox import Sandbox
from tests.support.servers import free_port

CHROMIUM = Path("/usr/bin/chromium")
# As root in a container: no sandbox; and nothing that would reach out to the network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORDS = {"alice": "alice-operator-pw", "victor": "victor-viewer-pw"}


@pytest.fixture(scope="module")
def pipeline(app_env: dict[str, str], log_dir: Path) -> Iterator[Pipeline]:
    env = {**app_env, "ACTOR_MAX_RETRIES": "2", "ACTOR_MAX_BACKOFF_MS": "300", "TBB_MAX_ATTEMPTS": "1"}
    running = start_pipeline(env, log_dir, name="console")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def console(pipeline: Pipeline, log_dir: Path) -> Iterator[str]:
    """`fulfil console` as operators run it, on a free loopback port; yields its base URL."""
    port = free_port()
    users = ",".join([f"alice:operator:{hash_password(PASSWORDS['alice'])}",
                      f"victor:viewer:{hash_password(PASSWORDS['victor'])}"])
    env = {**pipeline.env, "CONSOLE_USERS": users, "CONSOLE_SESSION_SECRET": uuid.uuid4().hex + uuid.uuid4().hex}
    process = ManagedProcess("console", [sys.executable, "-m", "fulfilment.cli", "console", "--port", str(port)],
                             env, log_dir).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).text == "ok":
                break
        except httpx.HTTPError:
            pass
        if not process.alive() or time.monotonic() > deadline:
            process.stop()
            raise RuntimeError(f"the console did not start:\n{process.log_tail()}")
        time.sleep(0.1)
    yield url
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (scripts/bootstrap.sh does it)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def stalled(pipeline: Pipeline, sandbox: Sandbox) -> Iterator[uuid.UUID]:
    """A purchase the workers gave up on: the sandbox refused every quote (503) until retries ran out."""
    sandbox.clear_faults()
    sandbox.set_faults({"create_quote": {"error_rate": 1.0, "error_statuses": [503]}})
    try:
        purchase_id = pipeline.submit(request(request_id=f"console-{uuid.uuid4().hex[:12]}"))
        wait_until([purchase_id], in_states("stalled"), timeout=60, pipeline=pipeline)
    finally:
        sandbox.clear_faults()
    yield purchase_id


def screenshots() -> Path:
    where = Path(os.environ.get("FULFIL_SCREENSHOT_DIR") or Path(os.environ.get("FULFIL_TEST_LOG_DIR", "/tmp"))
                 / "console-screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


def log_in(browser: Any, console: str, name: str) -> Any:
    """A fresh browser context (its own cookies), logged in as `name`; returns its page."""
    context = browser.new_context(viewport={"width": 1360, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    page.goto(f"{console}/")
    assert page.url.startswith(f"{console}/login?next="), page.url  # every page needs a login
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORDS[name])
    page.click("button[type=submit]")
    page.wait_for_url(f"{console}/")
    assert page.locator("h1").inner_text() == "Dashboard"
    return page


def test_a_viewer_sees_the_stalled_purchase_but_has_no_action_and_a_post_is_refused(
    browser: Any, console: str, stalled: uuid.UUID
) -> None:
    page = log_in(browser, console, "victor")
    page.goto(f"{console}/purchases?state=stalled")
    page.click(f"a[href='/purchases/{stalled}']")
    assert page.locator("#state").inner_text() == "stalled"
    assert page.locator("button", has_text="Retry").count() == 0
    assert page.locator("form[action$='/retry'], form[action$='/cancel'], form[action$='/resolve']").count() == 0
    # The viewer's own browser, with its session and a valid CSRF token (from the logout form), posts anyway.
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    response = page.request.post(f"{console}/purchases/{stalled}/retry", form={"csrf_token": csrf or ""},
                                 max_redirects=0)
    assert response.status == 403 and "viewer" in response.text()
    assert reload(stalled).state == "stalled"
    page.context.close()


def test_a_forged_post_without_the_csrf_token_is_refused(browser: Any, console: str, stalled: uuid.UUID) -> None:
    page = log_in(browser, console, "alice")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    assert cookies, "the login set no session cookie"
    [cookie] = [c for c in page.context.cookies()]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    # A forger holds the operator's session cookie (the browser would send it) but not the token.
    # Even from the console's own origin (a page injected into it, say), a POST without the token fails.
    with httpx.Client(base_url=console, cookies=cookies, follow_redirects=False,
                      headers={"Origin": console}) as forger:
        for form in ({}, {"csrf_token": "forged"}):
            response = forger.post(f"/purchases/{stalled}/retry", data=form)
            assert response.status_code == 403, response.text
        assert forger.post(f"/purchases/{stalled}/retry", json={"csrf_token": "forged"}).status_code == 403
        assert forger.get("/").status_code == 200  # the session itself is valid
    assert reload(stalled).state == "stalled"
    page.context.close()


def test_an_operator_finds_the_stalled_purchase_retries_it_and_sees_it_complete(
    browser: Any, console: str, stalled: uuid.UUID, pipeline: Pipeline
) -> None:
    shots = screenshots()
    page = log_in(browser, console, "alice")
    board = page.locator("main").inner_text()
    assert str(stalled) in board  # "Waiting for a person"
    assert "leading" in board and "no leader" not in board  # the pipeline's scheduler
    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

    page.click("a[href='/dead-letters']")
    assert str(stalled) in page.locator("table").inner_text()
    page.screenshot(path=str(shots / "dead-letters.png"), full_page=True)

    request_id = reload(stalled).request_id
    page.fill("input[name=q]", request_id)
    page.press("input[name=q]", "Enter")
    page.wait_for_url(f"{console}/purchases/{stalled}")
    assert page.locator("#state").inner_text() == "stalled"
    assert "503" in page.locator(".problem").inner_text()
    page.screenshot(path=str(shots / "purchase-stalled.png"), full_page=True)

    page.click("button#retry")
    page.wait_for_url(f"{console}/purchases/{stalled}")
    assert "Retried: stalled → received; sent quote_purchase." in page.locator(".flash").first.inner_text()

    deadline = time.monotonic() + 45
    while page.locator("#state").inner_text() != "transfer_complete":
        assert time.monotonic() < deadline, f"still {page.locator('#state').inner_text()}\n{pipeline.workers.log_tail()}"
        time.sleep(0.5)
        page.reload()
    text = page.locator("main").inner_text()
    assert "resumed by operator alice (web console)" in text
    assert re.search(r"order\s+\S+ \[", text) or "TBB-" in text
    page.screenshot(path=str(shots / "purchase.png"), full_page=True)

    with session_scope() as session:
        reasons = [t.reason for t in history(session, stalled)]
    assert any(r.startswith("resumed by operator alice (web console)") for r in reasons), reasons
    assert wait_until([stalled], in_states("transfer_complete"))[stalled].order_id
    page.context.close()
