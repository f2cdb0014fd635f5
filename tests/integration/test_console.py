"""The web console in-process (Starlette's TestClient) against real Postgres, RabbitMQ and the sandbox.

Login, session expiry and logout, CSRF on every form, roles (a viewer sees everything and can
do nothing), the pages, and the actions going through the CLI's service functions with the
logged-in user's name in the purchase's history.  tests/e2e/test_console_browser.py drives the
real process in a real browser.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import time
import uuid
import warnings
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pika
import pytest
from sqlalchemy import select

with warnings.catch_warnings():
    # starlette 1.x nudges towards "httpx2" on import; the TestClient works fine with httpx 0.28.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

from fulfilment import state_machine
from fulfilment.console import queries
from fulfilment.console.app import SESSION_COOKIE, create_app
from fulfilment.console.auth import hash_password, load_users
from fulfilment.console.config import ConsoleConfig
from fulfilment.db import session_scope
from fulfilment.partners.registry import get_partner, get_partners
from fulfilment.settings import (
    ConsoleSettings,
    get_database_settings,
    get_partner_settings,
    get_policy_settings,
    get_settings,
)
from fulfilment.state_machine import State
from fulfilment.steps import quote
from models import Purchase, RejectedRequest
from tests.support import factories, servers
from tests.support.console import oldest_waiting, transitions_since
from tests.support.factories import reload
from tests.support.sandbox import Sandbox

PASSWORDS = {"alice": "alice-operator-pw", "victor": "victor-viewer-pw"}
SECRET = "console-test-session-secret-0123456789abcdef"
# Cheap hashes: these tests log in many times (the default cost is for production).
CHEAP = {"n": 2**10, "r": 8, "p": 1}


def console_config(broker_url: str, *, max_age: int = 3600, partner: bool = True) -> ConsoleConfig:
    users = ",".join([f"alice:operator:{hash_password(PASSWORDS['alice'], **CHEAP)}",
                      f"victor:viewer:{hash_password(PASSWORDS['victor'], **CHEAP)}"])
    settings = ConsoleSettings(console_users=users, console_session_secret=SECRET,  # type: ignore[arg-type]
                               console_session_max_age_seconds=max_age)
    return ConsoleConfig(settings=settings, users=load_users(settings),
                         database_url=get_database_settings().database_url,
                         broker_url=broker_url, policy=get_policy_settings(),
                         partner=get_partner_settings() if partner else None)


@pytest.fixture(scope="module")
def broker_url(local_servers: None) -> Iterator[str]:
    """A vhost of the console's own: what its actions send (a retried step, a replayed message) must not
    reach the shared vhost's queues, which other tests expect to find as they left them."""
    created = servers.create_vhost("fulfil_console")
    try:
        yield created.url
    finally:
        servers.delete_vhost(created)


@pytest.fixture(scope="module")
def app(configured: dict[str, str], broker_url: str) -> Any:
    return create_app(console_config(broker_url))


def client(app: Any) -> TestClient:
    """A browser on the console's own pages: its POSTs carry the console's origin, as a browser's do."""
    return TestClient(app, follow_redirects=False, headers={"Origin": "http://testserver"})


def token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field in the page"
    return match.group(1)


def log_in(app: Any, name: str, password: str | None = None) -> tuple[TestClient, str]:
    """A client logged in as `name`, and its session's CSRF token."""
    browser = client(app)
    page = browser.get("/login")
    response = browser.post("/login", data={"csrf_token": token(page.text), "username": name,
                                            "password": password or PASSWORDS[name], "next": "/"})
    assert response.status_code == 303 and response.headers["location"] == "/", response.text
    home = browser.get("/")
    assert home.status_code == 200, home.text
    return browser, token(home.text)


@pytest.fixture(scope="module")
def alice(app: Any) -> tuple[TestClient, str]:
    return log_in(app, "alice")


@pytest.fixture(scope="module")
def victor(app: Any) -> tuple[TestClient, str]:
    return log_in(app, "victor")


CREATED: list[uuid.UUID] = []


def stored_purchase(**overrides: Any) -> uuid.UUID:
    purchase_id = factories.stored_purchase(**overrides)
    CREATED.append(purchase_id)
    return purchase_id


@pytest.fixture(scope="module", autouse=True)
def _nothing_left_waiting_for_a_person(configured: dict[str, str]) -> Iterator[None]:
    """The database is shared with the end-to-end tests: leave no purchase of ours held or live."""
    yield
    for purchase_id in CREATED:
        with session_scope() as session:
            purchase = session.get_one(Purchase, purchase_id, with_for_update=True)
            if State(purchase.state) in state_machine.ALLOWED and State.FAILED in state_machine.ALLOWED[State(purchase.state)]:
                state_machine.transition(session, purchase, State.FAILED, reason="test over",
                                         changes={"failure_code": "TEST", "failure_message": "test over"})


def move(purchase_id: uuid.UUID, *path: State, **changes: Any) -> None:
    for to_state in path:
        with session_scope() as session:
            purchase = session.get_one(Purchase, purchase_id, with_for_update=True)
            state_machine.transition(session, purchase, to_state, reason=f"test: to {to_state}", changes=changes,
                                     next_action_in=5 if state_machine.is_live(to_state) else None)
        changes = {}


def stalled_purchase() -> uuid.UUID:
    purchase_id = stored_purchase()
    move(purchase_id, State.STALLED, last_error="TbbUnavailable: 503 from create_quote")  # stalled from received
    return purchase_id


def history_reasons(purchase_id: uuid.UUID) -> list[str]:
    with session_scope() as session:
        return [t.reason for t in state_machine.history(session, purchase_id)]


def event_reasons(purchase_id: uuid.UUID) -> list[str]:
    """The reasons in the purchase's events (outbox), oldest first."""
    from models import OutboxEvent

    with session_scope() as session:
        events = session.scalars(select(OutboxEvent).where(OutboxEvent.purchase_id == purchase_id)
                                 .order_by(OutboxEvent.created_at, OutboxEvent.transition_id))
        return [event.payload["reason"] for event in events]


# ---- login and sessions -------------------------------------------------------------------------------


def test_every_page_needs_a_login(app: Any) -> None:
    anonymous = client(app)
    for path in ("/", "/purchases?state=stalled", f"/purchases/{uuid.uuid4()}", "/dead-letters", "/rejected",
                 "/search?q=x"):
        response = anonymous.get(path)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next="), path
    assert anonymous.get("/healthz").text == "ok"
    assert anonymous.get("/static/console.css").status_code == 200
    # An action without a session is refused, whatever it carries.
    assert anonymous.post(f"/purchases/{uuid.uuid4()}/retry", data={"csrf_token": "x"}).status_code == 403


def test_a_wrong_password_or_an_unknown_user_is_refused_alike(app: Any) -> None:
    browser = client(app)
    csrf = token(browser.get("/login").text)
    for name, password in (("alice", "not-her-password"), ("mallory", "whatever-password")):
        response = browser.post("/login", data={"csrf_token": csrf, "username": name, "password": password})
        assert response.status_code == 401 and "Wrong user name or password." in response.text
        assert browser.get("/").status_code == 303  # still not logged in


def test_the_login_form_itself_needs_its_csrf_token(app: Any) -> None:
    browser = client(app)
    browser.get("/login")
    response = browser.post("/login", data={"username": "alice", "password": PASSWORDS["alice"]})
    assert response.status_code == 403
    assert browser.get("/").status_code == 303


def test_repeated_failed_logins_are_throttled(configured: dict[str, str], broker_url: str) -> None:
    app = create_app(console_config(broker_url))  # a throttle of its own
    browser = client(app)
    csrf = token(browser.get("/login").text)
    for _ in range(5):
        assert browser.post("/login", data={"csrf_token": csrf, "username": "alice", "password": "nope"}).status_code == 401
    throttled = browser.post("/login", data={"csrf_token": csrf, "username": "alice", "password": PASSWORDS["alice"]})
    assert throttled.status_code == 429 and "Too many failed logins" in throttled.text


def test_the_session_cookie_is_httponly_samesite_and_expires(configured: dict[str, str], broker_url: str) -> None:
    app = create_app(console_config(broker_url, max_age=2))
    browser = client(app)
    page = browser.get("/login")
    response = browser.post("/login", data={"csrf_token": token(page.text), "username": "alice",
                                            "password": PASSWORDS["alice"]})
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "httponly" in cookie.lower()
    assert "samesite=lax" in cookie.lower() and "Max-Age=2" in cookie
    assert browser.get("/").status_code == 200
    time.sleep(2.2)
    expired = browser.get("/")
    assert expired.status_code == 303 and expired.headers["location"].startswith("/login")


def test_logout_ends_the_session_even_for_a_copy_of_its_cookie(app: Any) -> None:
    browser, csrf = log_in(app, "alice")
    stolen = browser.cookies.get(SESSION_COOKIE)
    assert browser.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert browser.get("/").status_code == 303
    replayed = client(app)
    replayed.cookies.set(SESSION_COOKIE, stolen)
    assert replayed.get("/").status_code == 303


def test_a_login_returns_to_the_page_asked_for_and_only_on_this_site(app: Any) -> None:
    browser = client(app)
    redirected = browser.get("/rejected")
    assert redirected.headers["location"] == "/login?next=%2Frejected"
    page = browser.get(redirected.headers["location"])
    assert 'name="next" value="/rejected"' in page.text
    response = browser.post("/login", data={"csrf_token": token(page.text), "username": "victor",
                                            "password": PASSWORDS["victor"], "next": "//evil.example/"})
    assert response.headers["location"] == "/"


# ---- CSRF and roles -----------------------------------------------------------------------------------


def test_a_post_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing(
    alice: tuple[TestClient, str]
) -> None:
    browser, csrf = alice
    purchase_id = stored_purchase()
    for data in ({"reason": "forged"}, {"reason": "forged", "csrf_token": "x" * len(csrf)},
                 {"reason": "forged", "csrf_token": ""}):
        response = browser.post(f"/purchases/{purchase_id}/cancel", data=data)
        assert response.status_code == 403 and "security token" in response.text
    as_json = browser.post(f"/purchases/{purchase_id}/cancel", json={"reason": "forged", "csrf_token": csrf})
    assert as_json.status_code == 403
    assert reload(purchase_id).state == "received"


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://testserver.evil.example"},
    {"Origin": "http://testserver:8443"},
    {"Origin": "ftp://testserver"},
    {"Origin": "", "Referer": "https://evil.example/page"},
    {"Origin": "", "Referer": "http://testserver@evil.example/"},
    {"Origin": ""},  # neither header: refused (OWASP's recommendation; browsers always send Origin on a POST)
])
def test_a_post_from_another_origin_is_refused_even_with_the_token(
    alice: tuple[TestClient, str], headers: dict[str, str]
) -> None:
    browser, csrf = alice
    purchase_id = stored_purchase()
    sent = {name: value for name, value in headers.items() if value}
    request = browser.build_request("POST", f"/purchases/{purchase_id}/cancel",
                                    data={"csrf_token": csrf, "reason": "forged"})
    for name in ("origin", "referer"):
        request.headers.pop(name, None)
    request.headers.update(sent)
    response = browser.send(request)
    assert response.status_code == 403 and ("another site" in response.text or "neither an Origin" in response.text)
    assert reload(purchase_id).state == "received"


def test_a_post_with_this_sites_origin_or_only_its_referer_is_accepted(alice: tuple[TestClient, str]) -> None:
    browser, csrf = alice
    for headers in ({"Origin": "http://testserver"}, {"Origin": "https://testserver:443"},
                    {"Referer": "http://testserver/purchases?state=stalled"}):
        purchase_id = stored_purchase()
        request = browser.build_request("POST", f"/purchases/{purchase_id}/cancel",
                                        data={"csrf_token": csrf, "reason": "same site"})
        request.headers.pop("origin", None)
        request.headers.update(headers)
        response = browser.send(request)
        assert response.status_code == 303, (headers, response.text)
        assert reload(purchase_id).state == "failed"


# Values no page means: NUL and other controls, overlong numbers, bad or odd encodings, huge values,
# markup and SQL.  Written as they go on the wire (percent-encoded).
HOSTILE = [
    "%00", "a%00b", "%01", "%7F", "%0d%0aX-Injected:%201", "99999999999999999999", "-1", "0", "1e400",
    "%ff%fe", "%C0%AF", "%ED%A0%80", "%E2%80%AE", "%F0%9F%92%A9", "..%2F..%2Fetc%2Fpasswd", "%2F%2Fevil.example",
    "x" * 5000, "%25" * 400, "'%3B%20DROP%20TABLE%20purchases%3B--", "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "%20", "%", "%zz", "00000000-0000-0000-0000-000000000000", "{{7*7}}",
]
GET_ROUTES = [
    "/search?q={v}", "/purchases?state={v}", "/purchases/{v}", "/dead-letters?purchase={v}", "/dead-letters/{v}",
    "/rejected?request_id={v}", "/rejected/{v}", "/login?next={v}", "/{v}", "/purchases/{v}/history",
    "/purchases?state=all&partner={v}", "/purchases?after={v}", "/purchases?from={v}&to={v}",
    "/purchases?deadline_within={v}", "/purchases/bulk/retry?state={v}", "/purchases/bulk/retry?state=stalled&to={v}",
    "/dead-letters?actor={v}", "/dead-letters/bulk/replay?actor={v}", "/rates?minutes={v}", "/rejected?before={v}",
]
POST_ROUTES = [
    ("/purchases/{v}/retry", {}), ("/purchases/{v}/cancel", {"reason": "{v}"}),
    ("/purchases/{v}/resolve", {"order_id": "{v}", "note": "{v}"}), ("/dead-letters/{v}/replay", {}),
    ("/dead-letters/{v}/purge", {"confirm": "yes"}), ("/login", {"username": "{v}", "password": "{v}"}),
    ("/purchases/bulk/retry", {"items": "{v}"}), ("/dead-letters/bulk/replay", {"items": "{v}"}),
]


def assert_own_page(response: Any, what: str) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert "/static/console.css" in response.text, (what, response.text[:300])
        assert "Traceback" not in response.text and "psycopg" not in response.text, what


def test_no_hostile_value_gets_a_500_on_any_route(alice: tuple[TestClient, str]) -> None:
    browser, csrf = alice
    for value in HOSTILE:
        for route in GET_ROUTES:
            url = route.format(v=value)
            assert_own_page(browser.get(url), url)
        for route, fields in POST_ROUTES:
            if route == "/login":
                continue  # logging in as a hostile name would end alice's session
            url = route.format(v=value)
            body = "&".join([f"csrf_token={csrf}", *(f"{name}={template.format(v=value)}"
                                                     for name, template in fields.items())])
            response = browser.post(url, content=body.encode(),
                                    headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert_own_page(response, url)
    assert browser.get("/").status_code == 200  # still logged in, nothing crashed


def test_hostile_logins_and_an_unknown_address_get_the_consoles_own_page(app: Any) -> None:
    browser = client(app)
    for value in HOSTILE[:12]:
        csrf = token(browser.get("/login").text)
        body = f"csrf_token={csrf}&username={value}&password={value}&next={value}"
        response = browser.post("/login", content=body.encode(),
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert_own_page(response, f"login {value}")
    alice_browser, _ = log_in(app, "alice")
    missing = alice_browser.get("/no/such/page")
    assert missing.status_code == 404 and "There is no such page in the console." in missing.text
    assert "fulfil console" in missing.text and "Log out" in missing.text  # the console's own layout
    wrong_method = alice_browser.get(f"/purchases/{uuid.uuid4()}/retry")
    assert wrong_method.status_code == 405 and "/static/console.css" in wrong_method.text


def test_a_nul_in_a_give_up_reason_is_a_clear_400_and_changes_nothing(alice: tuple[TestClient, str]) -> None:
    browser, csrf = alice
    purchase_id = stored_purchase()
    response = browser.post(f"/purchases/{purchase_id}/cancel", content=f"csrf_token={csrf}&reason=a%00b".encode(),
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400 and "NUL" in response.text
    assert reload(purchase_id).state == "received"


def test_a_viewer_sees_no_action_and_a_post_of_one_is_refused(victor: tuple[TestClient, str]) -> None:
    browser, csrf = victor
    purchase_id = stalled_purchase()
    page = browser.get(f"/purchases/{purchase_id}")
    assert page.status_code == 200 and "stalled" in page.text
    assert "/retry" not in page.text and "Give up" not in page.text and 'id="retry"' not in page.text
    for action, data in (("retry", {}), ("cancel", {"reason": "viewer"}), ("resolve", {"order_id": "TBB-1"})):
        response = browser.post(f"/purchases/{purchase_id}/{action}", data={"csrf_token": csrf, **data})
        assert response.status_code == 403 and "viewer" in response.text, action
    assert browser.post(f"/dead-letters/{uuid.uuid4()}/purge", data={"csrf_token": csrf, "confirm": "yes"}
                        ).status_code == 403
    assert reload(purchase_id).state == "stalled"


# ---- pages --------------------------------------------------------------------------------------------


def test_the_dashboard_shows_counts_scheduler_health_and_queues(alice: tuple[TestClient, str]) -> None:
    browser, _ = alice
    held = stalled_purchase()
    page = browser.get("/")
    assert page.status_code == 200
    for text in ("Scheduler leader", "Scheduler lag", "Outbox backlog", "Dead letters", "Purchases by state",
                 "purchases.quote.XQ", "needs_attention", str(held)):
        assert text in page.text, text
    for header in ("content-security-policy", "x-frame-options", "x-content-type-options"):
        assert header in page.headers
    assert page.headers["cache-control"] == "no-store"


def test_the_dashboard_names_the_scheduler_leader_holding_the_lock(alice: tuple[TestClient, str]) -> None:
    import psycopg

    from fulfilment.scheduler import SCHEDULER_LOCK_KEY

    browser, _ = alice
    dsn = get_database_settings().database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True, application_name="fulfil scheduler lock") as lock:
        assert lock.execute("SELECT pg_try_advisory_lock(%s)", (SCHEDULER_LOCK_KEY,)).fetchone() == (True,)
        page = browser.get("/").text
        assert "leading" in page and f"lock session pid {lock.info.backend_pid}" in page
        lock.execute("SELECT pg_advisory_unlock(%s)", (SCHEDULER_LOCK_KEY,))
        assert "no leader" in browser.get("/").text


def test_search_by_request_id_purchase_id_and_the_rejected_request(alice: tuple[TestClient, str]) -> None:
    browser, _ = alice
    purchase_id = stored_purchase()
    request_id = reload(purchase_id).request_id
    for query in (request_id, str(purchase_id)):
        found = browser.get("/search", params={"q": query})
        assert found.status_code == 303 and found.headers["location"] == f"/purchases/{purchase_id}"
    with session_scope() as session:
        session.add(RejectedRequest(request_id="console-rejected-1", reason_code="INVALID_REQUEST",
                                    reason="quantity: must be at least 1", raw_body='{"quantity": 0}'))
    missing = browser.get("/search", params={"q": "console-rejected-1"})
    assert missing.status_code == 404 and "INVALID_REQUEST" in missing.text and "quantity: must be" in missing.text
    listed = browser.get("/rejected")
    assert listed.status_code == 200 and "console-rejected-1" in listed.text
    rejection_id = re.search(r'href="/rejected/(\d+)"', listed.text).group(1)  # type: ignore[union-attr]
    shown = browser.get(f"/rejected/{rejection_id}")
    assert shown.status_code == 200 and "{&#34;quantity&#34;: 0}" in shown.text  # the raw body, escaped


def test_the_purchase_page_shows_request_quotes_history_and_events_and_no_secret(
    alice: tuple[TestClient, str], configured: dict[str, str], clean_sandbox: Sandbox
) -> None:
    browser, _ = alice
    purchase_id = stored_purchase(metadata={"note": "<script>alert(1)</script>"})
    quote.quote(purchase_id, partner=get_partners(), settings=get_settings())
    with session_scope() as session:  # a worker holds its claim: the token must not show
        claimed = state_machine.claim(session, purchase_id, [State.QUOTED], lease_seconds=60)
        assert claimed is not None and claimed.claim_token is not None
        claim_token = str(claimed.claim_token)
    purchase = reload(purchase_id)
    page = browser.get(f"/purchases/{purchase_id}")
    assert page.status_code == 200
    for text in (purchase.request_id, purchase.quote_id, "quoted", "purchase.quoted", "History", "Events"):
        assert text in page.text, text
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;" in page.text
    secrets = [claim_token, configured["TBB_CLIENT_SECRET"], get_database_settings().database_url,
               "fulfil:fulfil@", SECRET]
    for path in ("/", f"/purchases/{purchase_id}", "/dead-letters", "/rejected", "/purchases?state=quoted"):
        text = browser.get(path).text
        for secret in secrets:
            assert secret not in text, (path, secret)


def test_lists_of_held_purchases(alice: tuple[TestClient, str]) -> None:
    browser, _ = alice
    stalled, attention = stalled_purchase(), stored_purchase()
    move(attention, State.NEEDS_ATTENTION, failure_code="ORDER_OUTCOME_UNKNOWN", failure_message="check")
    assert str(stalled) in browser.get("/purchases", params={"state": "stalled"}).text
    page = browser.get("/purchases", params={"state": "needs_attention"})
    assert str(attention) in page.text and str(stalled) not in page.text
    assert browser.get("/purchases", params={"state": "paused"}).status_code == 200
    assert browser.get("/purchases", params={"state": "bogus"}).status_code == 400


def test_the_rates_page_draws_what_the_database_holds(alice: tuple[TestClient, str]) -> None:
    browser, _ = alice
    stalled_purchase(), stalled_purchase()
    page = browser.get("/rates", params={"minutes": "15"})
    assert page.status_code == 200, page.text
    assert page.text.count("<svg") >= 3 and "<script" not in page.text
    since = dt.datetime.fromisoformat(re.search(r'id="since" datetime="([^"]+)"', page.text).group(1))  # type: ignore[union-attr]
    shown = {state: int(n) for state, n in re.findall(r'data-state="([a-z_]+)">(\d+)<', page.text)}
    oldest = dict(re.findall(r'<tr><td><span class="state state-([a-z_]+)">[a-z_]+</span></td><td><a href="/purchases/'
                             r'([0-9a-f-]{36})"', page.text))
    counted, first = transitions_since(since), oldest_waiting(oldest)
    assert shown and shown == counted and shown["stalled"] >= 2
    assert oldest and oldest == first
    assert browser.get("/rates", params={"minutes": "0"}).status_code == 400


# ---- lists that scale --------------------------------------------------------------------------------


def on_day(purchase_ids: list[uuid.UUID], day: dt.date, **columns: Any) -> None:
    """Test setup: give purchases creation times one second apart on a day of their own (newest last), so a
    date filter isolates them in the shared database; and any other column values given."""
    from sqlalchemy import update

    with session_scope() as session:
        for i, purchase_id in enumerate(purchase_ids):
            created = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC) + dt.timedelta(seconds=i)
            session.execute(update(Purchase).where(Purchase.id == purchase_id).values(created_at=created, **columns))


def a_day() -> dt.date:
    """A day no other test uses (the list filters accept years 2000-2999)."""
    return dt.date(2100, 1, 1) + dt.timedelta(days=uuid.uuid4().int % 300_000)


def listed_ids(html: str) -> list[str]:
    table = html.split('<table class="purchases">', 1)[-1].split("</table>", 1)[0]
    return list(dict.fromkeys(re.findall(r'href="/purchases/([0-9a-f-]{36})"', table)))


def next_link(html: str) -> str | None:
    match = re.search(r'id="next" href="([^"]+)"', html)
    return match.group(1).replace("&amp;", "&") if match else None


def test_a_list_pages_by_keyset_through_every_row_even_as_new_ones_arrive(
    alice: tuple[TestClient, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    browser, _ = alice
    monkeypatch.setattr(queries, "PAGE_SIZE", 3)
    day = a_day()
    ids = [stalled_purchase() for _ in range(7)]
    on_day(ids, day)
    newest_first = [str(i) for i in reversed(ids)]
    url: str | None = f"/purchases?state=stalled&from={day}&to={day}"
    first = browser.get(url)
    assert "7 matches" in first.text and "(a later page)" not in first.text
    seen: list[str] = []
    while url:
        assert len(seen) < 100, "the Next links never end"
        page = browser.get(url)
        assert page.status_code == 200, page.text
        seen += listed_ids(page.text)
        if len(seen) == 3:  # a purchase arriving after the first page does not shift the next ones
            late = stalled_purchase()
            on_day([*ids, late], day)
        url = next_link(page.text)
    assert seen == newest_first
    bad = browser.get("/purchases?state=stalled&after=not-a-cursor")
    assert bad.status_code == 400 and "page position" in bad.text


def test_lists_filter_by_partner_dates_and_deadline_window_and_show_those_columns(alice: tuple[TestClient, str]) -> None:
    browser, _ = alice
    day = a_day()
    soon, later, tm = stalled_purchase(), stalled_purchase(), stalled_purchase()
    now = dt.datetime.now(dt.UTC)
    on_day([soon, later, tm], day)
    on_day([soon], day, delivery_deadline=now + dt.timedelta(hours=5))
    on_day([later], day, delivery_deadline=now + dt.timedelta(hours=100))
    on_day([tm], day, delivery_deadline=now + dt.timedelta(hours=100), partner="ticketmaster")
    on_day([soon, later, tm], day)  # creation order again

    base = f"/purchases?state=all&from={day}&to={day}"
    page = browser.get(base).text
    assert listed_ids(page) == [str(tm), str(later), str(soon)]
    assert "<th>partner</th>" in page and "<th>deadline</th>" in page and ">ticketmaster<" in page
    assert listed_ids(browser.get(f"{base}&partner=ticketmaster").text) == [str(tm)]
    assert listed_ids(browser.get(f"{base}&partner=tbb").text) == [str(later), str(soon)]
    assert listed_ids(browser.get(f"{base}&deadline_within=24").text) == [str(soon)]
    assert listed_ids(browser.get(f"{base}&deadline_within=200&partner=tbb").text) == [str(later), str(soon)]
    next_day = day + dt.timedelta(days=1)
    assert listed_ids(browser.get(f"/purchases?state=all&from={next_day}&to={next_day}").text) == []
    assert listed_ids(browser.get(f"/purchases?state=received&from={day}&to={day}").text) == []
    for bad in ("from=2024-13-01", "to=yesterday", "deadline_within=-3", "deadline_within=99999999", "partner=%3Cb%3E"):
        response = browser.get(f"/purchases?{bad}")
        assert response.status_code == 400 and "/static/console.css" in response.text, bad


def test_search_by_prefix_of_request_purchase_order_and_event_ids(alice: tuple[TestClient, str]) -> None:
    from sqlalchemy import update

    browser, _ = alice
    tag = uuid.uuid4().hex[:10]
    one = stored_purchase(request_id=f"pfx-{tag}-one")
    two = stored_purchase(request_id=f"pfx-{tag}-two")
    with session_scope() as session:
        session.execute(update(Purchase).where(Purchase.id == one).values(order_id=f"ORD{tag}-1", event_id=f"EV{tag}"))
    both = browser.get("/search", params={"q": f"pfx-{tag}-"})
    assert both.status_code == 200 and set(listed_ids(both.text)) == {str(one), str(two)}
    for query, expected in ((f"pfx-{tag}-tw", two), (f"ORD{tag}", one), (f"EV{tag}", one), (str(two)[:13], two)):
        response = browser.get("/search", params={"q": query})
        if response.status_code == 303:
            assert response.headers["location"] == f"/purchases/{expected}", query
        else:  # a short purchase id prefix may match other purchases too
            assert str(expected) in listed_ids(response.text), query
    # LIKE's wildcards are literal characters in a search.
    assert browser.get("/search", params={"q": f"pfx-{tag}%"}).status_code == 404
    assert browser.get("/search", params={"q": f"pfx_{tag}-"}).status_code == 404


def test_rejected_requests_page_by_keyset(alice: tuple[TestClient, str], monkeypatch: pytest.MonkeyPatch) -> None:
    browser, _ = alice
    monkeypatch.setattr(queries, "PAGE_SIZE", 2)
    request_id = f"console-rejected-{uuid.uuid4().hex[:8]}"
    with session_scope() as session:
        rows = [RejectedRequest(request_id=request_id, reason_code="INVALID_REQUEST", reason=f"number {i}",
                                raw_body="{}") for i in range(5)]
        session.add_all(rows)
        session.flush()
        ids = [str(r.id) for r in rows]
    url: str | None = f"/rejected?request_id={request_id}"
    seen: list[str] = []
    while url:
        assert len(seen) < 100, "the Next links never end"
        page = browser.get(url)
        assert page.status_code == 200, page.text
        seen += re.findall(r'<td><a href="/rejected/(\d+)">', page.text)
        url = next_link(page.text)
    assert seen == list(reversed(ids))
    assert browser.get("/rejected?before=x").status_code == 400


def test_bulk_retry_confirms_the_count_then_retries_each_in_the_operators_name(
    alice: tuple[TestClient, str], victor: tuple[TestClient, str]
) -> None:
    browser, csrf = alice
    day = a_day()
    ids = [stalled_purchase() for _ in range(3)]
    on_day(ids, day)
    confirm = browser.get(f"/purchases/bulk/retry?state=stalled&from={day}&to={day}")
    assert confirm.status_code == 200 and "Retry 3 purchases?" in confirm.text
    items = re.search(r'name="items" value="([^"]+)"', confirm.text).group(1)  # type: ignore[union-attr]
    assert sorted(items.split()) == sorted(str(i) for i in ids)
    assert reload(ids[0]).state == "stalled"  # the confirmation page changed nothing
    assert victor[0].post("/purchases/bulk/retry", data={"csrf_token": victor[1], "items": items}).status_code == 403
    move(ids[0], State.FAILED, failure_code="TEST", failure_message="moved on since the confirmation")

    done = browser.post("/purchases/bulk/retry", data={"csrf_token": csrf, "items": items})
    assert done.status_code == 200 and "Retry: 2 of 3 done" in done.text
    assert done.text.count("retried: stalled → received") == 2 and "not retried" in done.text
    for purchase_id in ids[1:]:
        assert reload(purchase_id).state == "received"
        assert history_reasons(purchase_id)[-1].startswith("resumed by operator alice (web console, bulk retry of 3)")
        assert event_reasons(purchase_id)[-1].startswith("resumed by operator alice (web console, bulk retry of 3)")
    assert browser.get("/purchases/bulk/retry?state=received").status_code == 400  # only held states
    assert browser.post("/purchases/bulk/retry", data={"csrf_token": csrf, "items": "x " * 201}).status_code == 400


# ---- actions ----------------------------------------------------------------------------------------


def test_retry_resumes_a_stalled_purchase_in_the_operators_name(alice: tuple[TestClient, str], broker_url: str) -> None:
    browser, csrf = alice
    purchase_id = stalled_purchase()
    response = browser.post(f"/purchases/{purchase_id}/retry", data={"csrf_token": csrf})
    assert response.status_code == 303 and response.headers["location"] == f"/purchases/{purchase_id}"
    page = browser.get(response.headers["location"])
    assert "Retried: stalled → received; sent quote_purchase." in page.text
    assert reload(purchase_id).state == "received"
    assert "resumed by operator alice (web console)" in history_reasons(purchase_id)[-1]
    assert "resumed by operator alice (web console)" in event_reasons(purchase_id)[-1]
    sent = [json.loads(raw) for raw in contents(broker_url, "purchases.quote")]
    assert any(m["actor_name"] == "quote_purchase" and m["args"] == [str(purchase_id)] for m in sent)
    again = browser.get(f"/purchases/{purchase_id}")
    assert "Retried:" not in again.text  # the message is shown once


def test_give_up_needs_a_reason_and_writes_it_with_the_operator(alice: tuple[TestClient, str]) -> None:
    browser, csrf = alice
    purchase_id = stored_purchase()
    blank = browser.post(f"/purchases/{purchase_id}/cancel", data={"csrf_token": csrf, "reason": "  "})
    assert "Not given up: a reason is required" in browser.get(blank.headers["location"]).text
    done = browser.post(f"/purchases/{purchase_id}/cancel", data={"csrf_token": csrf, "reason": "customer withdrew"})
    assert "Given up: received → failed" in browser.get(done.headers["location"]).text
    purchase = reload(purchase_id)
    assert purchase.state == "failed" and purchase.failure_code == "CANCELLED_BY_OPERATOR"
    assert history_reasons(purchase_id)[-1] == "cancelled by operator alice (web console): customer withdrew"
    assert event_reasons(purchase_id)[-1] == "cancelled by operator alice (web console): customer withdrew"

    ordering = stored_purchase()
    move(ordering, State.QUOTED, State.ORDERING, State.STALLED)
    refused = browser.post(f"/purchases/{ordering}/cancel", data={"csrf_token": csrf, "reason": "try"})
    assert "an order may exist or be in flight" in browser.get(refused.headers["location"]).text
    assert reload(ordering).state == "stalled"


def test_record_a_found_order_fetches_it_and_names_the_operator(
    alice: tuple[TestClient, str], clean_sandbox: Sandbox, broker_url: str
) -> None:
    browser, csrf = alice
    purchase_id = stored_purchase()
    quote.quote(purchase_id, partner=get_partners(), settings=get_settings())
    purchase = reload(purchase_id)
    order = get_partner().create_order(purchase.quote_id, delivery_type=purchase.delivery_type,
                                       delivery_deadline=purchase.delivery_deadline, request_id=str(uuid.uuid4()))
    move(purchase_id, State.ORDERING, State.ORDER_UNKNOWN)
    move(purchase_id, State.NEEDS_ATTENTION, failure_code="ORDER_OUTCOME_UNKNOWN", failure_message="check")
    page = browser.get(f"/purchases/{purchase_id}")
    assert "Record a found order" in page.text
    done = browser.post(f"/purchases/{purchase_id}/resolve",
                        data={"csrf_token": csrf, "order_id": order.order_id, "note": "seen in the portal"})
    assert "Recorded: needs_attention → awaiting_transfer" in browser.get(done.headers["location"]).text
    purchase = reload(purchase_id)
    assert purchase.state == "awaiting_transfer" and purchase.order_id == order.order_id
    assert "recorded by operator alice (web console): seen in the portal" in history_reasons(purchase_id)[-1]
    assert "recorded by operator alice (web console): seen in the portal" in event_reasons(purchase_id)[-1]
    page = browser.get(f"/purchases/{purchase_id}")
    assert order.order_id in page.text and (order.transfer_email or "") in page.text

    without_partner = create_app(console_config(broker_url, partner=False))
    other = stored_purchase()
    move(other, State.QUOTED, State.ORDERING, State.STALLED)
    browser2, csrf2 = log_in(without_partner, "alice")
    response = browser2.post(f"/purchases/{other}/resolve", data={"csrf_token": csrf2, "order_id": "TBB-1"})
    assert "no partner settings" in browser2.get(response.headers["location"]).text


def test_record_a_ticketmaster_order_found_through_support_with_its_token(alice: tuple[TestClient, str]) -> None:
    from fulfilment import ticket_crypto
    from fulfilment.steps import intake

    browser, csrf = alice
    purchase_id = intake.accept(factories.tm_request(), settings=get_settings())
    assert purchase_id is not None
    CREATED.append(purchase_id)
    move(purchase_id, State.NEEDS_ATTENTION, failure_code="ORDER_TOKEN_UNKNOWN", failure_message="ask support")
    page = browser.get(f"/purchases/{purchase_id}")
    assert "Record order and token" in page.text
    done = browser.post(f"/purchases/{purchase_id}/resolve", data={
        "csrf_token": csrf, "order_id": "35-49135/LA1", "order_token": "tm-order-token-from-support", "note": "case 7"})
    assert "Recorded: needs_attention → awaiting_tickets" in browser.get(done.headers["location"]).text
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.order_id) == ("awaiting_tickets", "35-49135/LA1")
    key = get_settings().ticket_key
    assert key is not None
    assert ticket_crypto.decrypt(key, purchase.partner_data["order_token"]).get_secret_value() == (
        "tm-order-token-from-support")
    assert "tm-order-token-from-support" not in str(purchase.partner_data)
    assert "tm-order-token-from-support" not in browser.get(f"/purchases/{purchase_id}").text
    assert "recorded with its token by operator alice (web console): case 7" in history_reasons(purchase_id)[-1]
    assert not any("tm-order-token-from-support" in reason for reason in event_reasons(purchase_id))


# ---- dead letters -----------------------------------------------------------------------------------


def kill(broker_url: str, queue: str, body: dict[str, Any] | bytes) -> None:
    """Put a message into `<queue>.XQ`, where RabbitMQ leaves what a worker gave up on (the queues declared
    by dramatiq itself, as the workers do)."""
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    declaring = RabbitmqBroker(url=broker_url, confirm_delivery=True, middleware=[])
    declaring.declare_queue(queue, ensure=True)
    declaring.close()
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        channel.basic_publish("", f"{queue}.XQ", raw, pika.BasicProperties(delivery_mode=2), mandatory=True)
    finally:
        connection.close()


def dead_quote_message(purchase_id: uuid.UUID) -> dict[str, Any]:
    return {"queue_name": "purchases.quote", "actor_name": "quote_purchase", "args": [str(purchase_id)], "kwargs": {},
            "options": {"retries": 2, "traceback": "Traceback...\nTbbUnavailable: 503 from create_quote\n"},
            "message_id": str(uuid.uuid4()), "message_timestamp": int(time.time() * 1000) - 60_000}


def test_dead_letters_listed_shown_replayed_and_purged_in_the_operators_name(
    alice: tuple[TestClient, str], victor: tuple[TestClient, str], broker_url: str
) -> None:
    browser, csrf = alice
    replayed_purchase, purged_purchase = stalled_purchase(), stalled_purchase()
    to_replay, to_purge = dead_quote_message(replayed_purchase), dead_quote_message(purged_purchase)
    kill(broker_url, "purchases.quote", to_replay)
    kill(broker_url, "purchases.quote", to_purge)

    listed = browser.get("/dead-letters")
    assert to_replay["message_id"] in listed.text and to_purge["message_id"] in listed.text
    assert "TbbUnavailable: 503 from create_quote" in listed.text
    mine = browser.get("/dead-letters", params={"purchase": str(purged_purchase)})
    assert to_purge["message_id"] in mine.text and to_replay["message_id"] not in mine.text
    shown = browser.get(f"/dead-letters/{to_replay['message_id']}")
    assert shown.status_code == 200 and "quote_purchase" in shown.text and "Replay" in shown.text
    viewer_page = victor[0].get(f"/dead-letters/{to_replay['message_id']}")
    assert viewer_page.status_code == 200 and "/replay" not in viewer_page.text and "/purge" not in viewer_page.text

    replay = browser.post(f"/dead-letters/{to_replay['message_id']}/replay", data={"csrf_token": csrf})
    assert f"Replayed {to_replay['message_id']} (quote_purchase)" in browser.get(replay.headers["location"]).text
    assert reload(replayed_purchase).state == "received"
    assert (f"resumed by dead-letter replay of message {to_replay['message_id']} by operator alice (web console)"
            in history_reasons(replayed_purchase)[-1])

    unconfirmed = browser.post(f"/dead-letters/{to_purge['message_id']}/purge", data={"csrf_token": csrf})
    assert "tick the box" in browser.get(unconfirmed.headers["location"]).text
    purged = browser.post(f"/dead-letters/{to_purge['message_id']}/purge", data={"csrf_token": csrf, "confirm": "yes"})
    assert f"Purged dead message {to_purge['message_id']}" in browser.get(purged.headers["location"]).text
    after = browser.get("/dead-letters").text
    assert to_replay["message_id"] not in after and to_purge["message_id"] not in after
    assert browser.get(f"/dead-letters/{to_purge['message_id']}").status_code == 404
    replayed = contents(broker_url, "purchases.quote")
    assert [json.loads(raw)["message_id"] for raw in replayed][-1:] == [to_replay["message_id"]]


def test_an_undecodable_dead_letter_has_a_page_with_its_raw_bytes_and_is_purged_alone(
    alice: tuple[TestClient, str], broker_url: str
) -> None:
    from fulfilment.rabbitmq.dead_letters import raw_key

    browser, csrf = alice
    garbage = b"\x00\xfe<script>alert(1)</script> not a message " + b"z" * 3000
    good = dead_quote_message(stalled_purchase())
    kill(broker_url, "purchases.quote", garbage)
    kill(broker_url, "purchases.quote", good)
    key = raw_key("purchases.quote", garbage)

    listed = browser.get("/dead-letters").text
    assert f'href="/dead-letters/{key}"' in listed and "undecodable" in listed
    page = browser.get(f"/dead-letters/{key}")
    assert page.status_code == 200, page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and "<script>alert" not in page.text
    assert "\\x00\\xfe" in page.text  # the bytes, escaped
    assert "3042 bytes, the first 2000 shown" in page.text and "z" * 2100 not in page.text
    assert "cannot be replayed" in page.text and f"/dead-letters/{key}/replay" not in page.text
    refused = browser.post(f"/dead-letters/{key}/replay", data={"csrf_token": csrf})
    assert "undecodable body (not a JSON object)" in browser.get(refused.headers["location"]).text

    purged = browser.post(f"/dead-letters/{key}/purge", data={"csrf_token": csrf, "confirm": "yes"})
    assert f"Purged dead message {key} (1 copy)" in browser.get(purged.headers["location"]).text
    left = contents(broker_url, "purchases.quote.XQ")
    assert garbage not in left and json.dumps(good).encode() in left  # the good letter stays
    assert browser.get(f"/dead-letters/{key}").status_code == 404


def test_bulk_replay_of_an_actors_dead_letters_with_a_result_each(
    alice: tuple[TestClient, str], broker_url: str
) -> None:
    from fulfilment.rabbitmq.dead_letters import raw_key

    browser, csrf = alice
    purchases = [stalled_purchase(), stalled_purchase()]
    letters = [dead_quote_message(p) for p in purchases]
    for letter in letters:
        kill(broker_url, "purchases.quote", letter)
    kill(broker_url, "purchases.quote", b"\x00undecodable, never in a bulk replay")
    confirm = browser.get("/dead-letters/bulk/replay", params={"actor": "quote_purchase"})
    assert confirm.status_code == 200, confirm.text
    items = re.search(r'name="items" value="([^"]+)"', confirm.text).group(1).split()  # type: ignore[union-attr]
    assert {letter["message_id"] for letter in letters} <= set(items) and not any(i.startswith("raw-") for i in items)
    done = browser.post("/dead-letters/bulk/replay", data={"csrf_token": csrf, "items": " ".join(items)})
    assert done.status_code == 200 and f"Replay: {len(items)} of {len(items)} done" in done.text, done.text
    for purchase_id, letter in zip(purchases, letters, strict=True):
        assert reload(purchase_id).state == "received"
        assert (f"resumed by dead-letter replay of message {letter['message_id']} by operator alice "
                f"(web console, bulk replay of {len(items)})") == history_reasons(purchase_id)[-1]
    junk = raw_key("purchases.quote", b"\x00undecodable, never in a bulk replay")
    assert browser.post(f"/dead-letters/{junk}/purge", data={"csrf_token": csrf, "confirm": "yes"}).status_code == 303


def contents(broker_url: str, queue: str) -> list[bytes]:
    """Every message in a queue, left in place."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = connection.channel()
        bodies = []
        for _ in range(channel.queue_declare(queue, passive=True).method.message_count):
            method, _properties, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            bodies.append(body)
        return bodies  # closing the channel requeues them all
    finally:
        connection.close()


def test_an_unreachable_database_is_one_line_on_the_page(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from fulfilment import db

    browser, _ = log_in(app, "alice")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    dead = f"postgresql+psycopg://fulfil:pw-never-shown@127.0.0.1:{dead_port}/x"
    monkeypatch.setattr(app.state, "config", dataclasses.replace(app.state.config, database_url=dead))
    monkeypatch.setattr(db, "get_database_settings", lambda: SimpleNamespace(database_url=dead))
    page = browser.get("/")
    assert page.status_code == 503, page.text
    assert f"database at 127.0.0.1:{dead_port} unreachable" in page.text and "pw-never-shown" not in page.text
