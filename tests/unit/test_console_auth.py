"""The console's users, passwords, sessions and CSRF tokens, and `fulfil console` refusing to start
without users or a session secret (no servers needed)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fulfilment.cli import app
from fulfilment.cli.common import EXIT_USAGE
from fulfilment.console import auth
from fulfilment.console.auth import Authenticator, LoginThrottle, Role, hash_password, parse_users, verify_password
from fulfilment.console.csrf import parse_form, token_matches
from fulfilment.settings import ConsoleSettings, SettingsError, get_settings

CHEAP = {"n": 2**10, "r": 8, "p": 1}
SECRET = "s" * 40


def cheap(password: str) -> str:
    return hash_password(password, **CHEAP)


# ---- passwords --------------------------------------------------------------------------------------


def test_a_hash_verifies_its_password_only() -> None:
    encoded = cheap("correct horse")
    assert verify_password("correct horse", encoded)
    assert not verify_password("correct horse ", encoded)
    assert not verify_password("", encoded)
    assert cheap("correct horse") != encoded  # a fresh salt each time


def test_the_default_hash_is_scrypt_with_its_parameters_in_it() -> None:
    encoded = hash_password("pw-12345678")
    kind, n, r, p, salt, key = encoded.split("$")
    assert (kind, int(n), int(r), int(p)) == ("scrypt", auth.SCRYPT_N, auth.SCRYPT_R, auth.SCRYPT_P)
    assert len(salt) >= 20 and len(key) >= 40 and ":" not in encoded and "," not in encoded
    assert verify_password("pw-12345678", encoded)


@pytest.mark.parametrize("encoded", [
    "", "plain-text-password", "scrypt$1024$8$1$salt", "bcrypt$1024$8$1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5",
    "scrypt$1000$8$1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5",  # N not a power of 2
    f"scrypt${2**24}$8$1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5",  # 16 GiB: refused, not attempted
    "scrypt$1024$8$1$!!$a2V5a2V5a2V5a2V5a2V5a2V5",
])
def test_a_malformed_or_hostile_hash_never_verifies(encoded: str) -> None:
    assert not verify_password("anything", encoded)


# ---- users ------------------------------------------------------------------------------------------


def test_users_from_entries_separated_by_commas_or_lines_with_comments() -> None:
    text = f"# operators\nalice:operator:{cheap('a-password')}, bob:viewer:{cheap('b-password')}\n\n"
    users = parse_users(text, "CONSOLE_USERS")
    assert [(u.name, u.role) for u in users] == [("alice", Role.OPERATOR), ("bob", Role.VIEWER)]
    assert users[0].can_act and not users[1].can_act
    assert "scrypt" not in repr(users[0])


@pytest.mark.parametrize(("entry", "expected"), [
    ("alice:admin:{hash}", "user 'alice': role must be viewer or operator"),
    ("al ice:viewer:{hash}", "entry 1: a user name is"),
    ("alice:viewer", "entry 1 is not name:role:hash"),
    ("alice:viewer:secret-in-plain-text", "user 'alice': not a scrypt"),
])
def test_a_bad_user_entry_is_named_without_its_hash(entry: str, expected: str) -> None:
    encoded = cheap("a-password")
    with pytest.raises(SettingsError) as raised:
        parse_users(entry.format(hash=encoded), "CONSOLE_USERS")
    assert expected in str(raised.value)
    assert encoded not in str(raised.value) and "secret-in-plain-text" not in str(raised.value)


def settings(**values: object) -> ConsoleSettings:
    return ConsoleSettings(**{"console_session_secret": SECRET, **values})  # type: ignore[arg-type]


def test_no_users_at_all_is_refused_with_how_to_make_one() -> None:
    with pytest.raises(SettingsError) as raised:
        auth.load_users(settings(console_users=" , "))
    assert "no console users configured" in str(raised.value)
    assert "fulfil console hash-password" in str(raised.value)


def test_users_from_a_file_too_and_never_twice(tmp_path: Path) -> None:
    users_file = tmp_path / "users"
    users_file.write_text(f"# one per line\ncarol:operator:{cheap('c-password')}\n")
    loaded = auth.load_users(settings(console_users=f"dave:viewer:{cheap('d-password')}",
                                      console_users_file=str(users_file)))
    assert sorted(loaded) == ["carol", "dave"]
    with pytest.raises(SettingsError, match="'carol' is configured twice"):
        auth.load_users(settings(console_users=f"carol:viewer:{cheap('x-password')}",
                                 console_users_file=str(users_file)))
    with pytest.raises(SettingsError, match="CONSOLE_USERS_FILE: cannot read"):
        auth.load_users(settings(console_users_file=str(tmp_path / "missing")))


def test_console_settings_bind_loopback_and_need_a_long_secret() -> None:
    assert settings().console_host == "127.0.0.1"
    with pytest.raises(ValueError, match="at least 32"):
        ConsoleSettings(console_session_secret="short")  # type: ignore[arg-type]


# ---- sessions ---------------------------------------------------------------------------------------


@pytest.fixture
def authenticator() -> Authenticator:
    users = {u.name: u for u in parse_users(f"alice:operator:{cheap('alice-pw')},bob:viewer:{cheap('bob-pw')}", "t")}
    return Authenticator(users, max_age_seconds=60)


def test_authenticate_checks_the_password_and_unknown_users_alike(authenticator: Authenticator) -> None:
    assert authenticator.authenticate("alice", "alice-pw") == authenticator.users["alice"]
    assert authenticator.authenticate("alice", "bob-pw") is None
    assert authenticator.authenticate("mallory", "alice-pw") is None


def test_a_session_is_valid_until_it_expires(authenticator: Authenticator, monkeypatch: pytest.MonkeyPatch) -> None:
    session: dict[str, object] = {"csrf": "before-login"}
    authenticator.start_session(session, authenticator.users["alice"])
    assert session["csrf"] != "before-login"  # a fresh token and id at login
    assert authenticator.user_of(session) == authenticator.users["alice"]
    started = time.time()
    monkeypatch.setattr(auth.time, "time", lambda: started + 59)
    assert authenticator.user_of(session) is not None
    monkeypatch.setattr(auth.time, "time", lambda: started + 61)
    assert authenticator.user_of(session) is None


def test_logout_revokes_the_session_id(authenticator: Authenticator) -> None:
    session: dict[str, object] = {}
    authenticator.start_session(session, authenticator.users["bob"])
    copy = dict(session)
    authenticator.end_session(session)
    assert session == {} and authenticator.user_of(copy) is None


def test_a_changed_password_or_a_removed_user_ends_their_sessions(authenticator: Authenticator) -> None:
    session: dict[str, object] = {}
    authenticator.start_session(session, authenticator.users["alice"])
    changed = parse_users(f"alice:operator:{cheap('new-alice-pw')}", "t")[0]
    assert Authenticator({"alice": changed}, max_age_seconds=60).user_of(session) is None
    assert Authenticator({}, max_age_seconds=60).user_of(session) is None
    assert authenticator.user_of({"user": "alice", "sid": "x", "login_at": "now", "pwv": "y"}) is None


def test_failed_logins_are_throttled_per_address_and_name_never_per_name_alone() -> None:
    throttle = LoginThrottle(limit=3, window=60, per_address=100)
    for _ in range(3):
        assert throttle.wait_seconds("alice", "10.0.0.9") == 0
        throttle.failed("alice", "10.0.0.9")
    assert throttle.wait_seconds("alice", "10.0.0.9") > 0
    # The attacker's failures do not lock alice out from her own address, nor other names from theirs.
    assert throttle.wait_seconds("alice", "10.0.0.1") == 0 and throttle.wait_seconds("bob", "10.0.0.9") == 0
    throttle.succeeded("alice", "10.0.0.9")
    assert throttle.wait_seconds("alice", "10.0.0.9") == 0


def test_one_address_trying_many_names_is_throttled_for_every_name() -> None:
    throttle = LoginThrottle(limit=5, window=60, per_address=10)
    for i in range(10):
        throttle.failed(f"random-{i}", "10.0.0.9")
    assert throttle.wait_seconds("alice", "10.0.0.9") > 0 and throttle.wait_seconds("never-seen", "10.0.0.9") > 0
    assert throttle.wait_seconds("alice", "10.0.0.1") == 0


def test_the_throttles_store_stays_bounded_under_names_and_addresses_that_never_repeat() -> None:
    throttle = LoginThrottle(limit=5, window=300, per_address=10**6, capacity=500)
    for i in range(20_000):
        throttle.failed(f"name-{i}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert throttle.size <= 1000
    throttle.failed("alice", "10.9.9.9")
    assert throttle.size <= 1000


def test_the_password_gate_runs_few_checks_one_per_address_and_refuses_the_rest_at_once() -> None:
    import asyncio
    import threading

    from fulfilment.console.auth import Busy, PasswordGate

    gate = PasswordGate(concurrent=2, queued=3)
    running = 0
    most = 0
    lock = threading.Lock()

    def check() -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return "checked"

    async def flood() -> list[object]:
        same_address = [gate.run("10.0.0.9", check) for _ in range(20)]
        many_addresses = [gate.run(f"10.0.1.{i}", check) for i in range(20)]
        return await asyncio.gather(*same_address, *many_addresses, return_exceptions=True)

    results = asyncio.run(flood())
    checked = [r for r in results if r == "checked"]
    refused = [r for r in results if isinstance(r, Busy)]
    assert len(checked) + len(refused) == 40
    assert results[0] == "checked" and all(isinstance(r, Busy) for r in results[1:20])  # one per address
    assert len(checked) == 5 and most <= 2 and gate.peak <= 5 and gate.admitted == 0


# ---- CSRF -------------------------------------------------------------------------------------------


def test_csrf_tokens_match_only_exactly() -> None:
    token = auth.new_csrf_token()
    assert len(token) >= 40 and token_matches(token, token)
    for given in (None, "", token[:-1], token + "x", 42):
        assert not token_matches(token, given)
    assert not token_matches(None, None) and not token_matches("", "")


@pytest.mark.parametrize(("headers", "allowed"), [
    ({"origin": "http://console.local:8090"}, True),
    ({"origin": "https://console.local:8090"}, True),  # a TLS proxy in front
    ({"referer": "http://console.local:8090/purchases/x"}, True),
    ({"origin": "http://console.local:8091"}, False),
    ({"origin": "http://evil.example"}, False),
    ({"origin": "null"}, False),
    ({"origin": "http://evil.example", "referer": "http://console.local:8090/"}, False),  # Origin decides
    ({"referer": "http://console.local:8090.evil.example/"}, False),
    ({"referer": "not a url"}, False),
    ({}, False),
])
def test_a_post_must_come_from_this_site(headers: dict[str, str], allowed: bool) -> None:
    from fulfilment.console.csrf import origin_problem

    raw = [(b"host", b"console.local:8090"), *((k.encode(), v.encode()) for k, v in headers.items())]
    scope = {"type": "http", "scheme": "http", "headers": raw}
    assert (origin_problem(scope) is None) is allowed


@pytest.mark.parametrize(("path", "query", "bad"), [
    ("/purchases/abc", b"", False), ("/search", b"q=caf%C3%A9", False), ("/purchases/\x00", b"", True),
    ("/search", b"q=%00", True), ("/search", b"q=a%0Ab", True), ("/search", b"q=%ff", True),
    ("/x" * 600, b"", True), ("/search", b"q=" + b"a" * 5000, True),
])
def test_paths_and_queries_no_page_could_mean_are_refused(path: str, query: bytes, bad: bool) -> None:
    from fulfilment.console.csrf import input_problem

    assert (input_problem({"path": path, "query_string": query}) is not None) is bad


def test_forms_are_parsed_first_value_wins() -> None:
    assert parse_form(b"csrf_token=a&reason=two+words&reason=ignored&empty=") == {
        "csrf_token": "a", "reason": "two words", "empty": ""}
    with pytest.raises(ValueError):
        parse_form(b"\xff\xfe")
    with pytest.raises(ValueError, match="NUL"):
        parse_form(b"reason=a%00b")
    with pytest.raises(ValueError):
        parse_form(b"reason=%ff")


# ---- `fulfil console` -------------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    import os

    for name in list(os.environ):
        if name.startswith(("CONSOLE_", "DATABASE_URL", "BROKER_URL", "TBB_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env
    get_settings.cache_clear()
    yield {"DATABASE_URL": "postgresql://fulfil:db-password-7731@127.0.0.1:1/fulfil",
           "BROKER_URL": "amqp://fulfil:amqp-password-7731@127.0.0.1:1/%2F"}
    get_settings.cache_clear()


def test_the_console_refuses_to_start_without_users(env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["console"], env={**env, "CONSOLE_SESSION_SECRET": SECRET})
    assert result.exit_code == EXIT_USAGE, result.output
    assert "CONSOLE_USERS: no console users configured" in result.stderr
    assert "Traceback" not in result.output and "7731" not in result.output


def test_the_console_refuses_a_missing_or_short_session_secret_without_echoing_it(env: dict[str, str]) -> None:
    users = f"alice:operator:{cheap('alice-pw')}"
    missing = CliRunner().invoke(app, ["console"], env={**env, "CONSOLE_USERS": users})
    assert missing.exit_code == EXIT_USAGE and "CONSOLE_SESSION_SECRET: is required but not set" in missing.stderr
    short = CliRunner().invoke(app, ["console"], env={**env, "CONSOLE_USERS": users,
                                                      "CONSOLE_SESSION_SECRET": "too-short-secret-xyz"})
    assert short.exit_code == EXIT_USAGE and "CONSOLE_SESSION_SECRET" in short.stderr
    assert "too-short-secret-xyz" not in short.output


def test_hash_password_makes_a_hash_or_a_whole_entry(env: dict[str, str]) -> None:
    plain = CliRunner().invoke(app, ["console", "hash-password", "--stdin"], input="a-long-password\n")
    assert plain.exit_code == 0, plain.output
    assert verify_password("a-long-password", plain.stdout.strip())
    entry = CliRunner().invoke(app, ["console", "hash-password", "--stdin", "--user", "erin", "--role", "operator"],
                               input="erin-password\n")
    [user] = parse_users(entry.stdout.strip(), "test")
    assert (user.name, user.role) == ("erin", Role.OPERATOR) and verify_password("erin-password", user.password_hash)
    short = CliRunner().invoke(app, ["console", "hash-password", "--stdin"], input="short\n")
    assert short.exit_code == EXIT_USAGE and "at least 8" in short.stderr


# ---- charts (the rates page) ------------------------------------------------------------------------


def test_charts_escape_every_label_and_scale_to_the_largest_value() -> None:
    from fulfilment.console import charts

    drawn = charts.columns([0, 2, 4], ["<a>", "b", "c"], width=300, height=40, name='x" onload="y')
    assert "<a>" not in drawn and "&lt;a&gt;" in drawn and 'onload="y' not in drawn
    assert [float(v) for v in re.findall(r'data-value="([^"]+)"', drawn)] == [0, 2, 4]
    heights = [float(h) for h in re.findall(r' height="([\d.]+)" fill', drawn)]
    assert heights[0] == 0 and heights[2] == 38 and heights[1] == 19  # scaled to the largest, empty stays empty
    bars = charts.bars([("<script>alert(1)</script>", 3.0), ("b", 0)], unit=" <i>")
    assert "<script>" not in bars and "&lt;script&gt;" in bars and "<i>" not in bars
