"""`fulfil` fails politely: one line naming what is wrong, an exit code that says which kind, no secrets.

No servers: the database and the broker are "stopped" (a free local port: connection refused).
Exit codes (fulfilment/cli/common.py): 1 not found, 2 usage/configuration, 3 unreachable, 4 refused.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from fulfilment.cli import app
from fulfilment.cli.common import EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE
from fulfilment.settings import Settings, get_settings
from tests.support.servers import REPO

PASSWORD = "pw-never-shown-7731"
SETTINGS_VARIABLES = [name.upper() for name in Settings.model_fields]


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again: nothing listens there


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    """No setting from the test runner's environment, no .env file: each test sets what it means."""
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield {
        "DATABASE_URL": f"postgresql://fulfil:{PASSWORD}@127.0.0.1:{dead_port()}/fulfil",
        "BROKER_URL": f"amqp://fulfil:{PASSWORD}@127.0.0.1:{dead_port()}/%2F",
        "TBB_BASE_URL": f"http://127.0.0.1:{dead_port()}",
        "TBB_CLIENT_ID": "partner-a",
        "TBB_CLIENT_SECRET": PASSWORD,
    }
    get_settings.cache_clear()


def fulfil(environment: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args), env=environment)
    finally:
        get_settings.cache_clear()


def port_of(url: str) -> str:
    return url.rsplit(":", 1)[1].split("/", 1)[0]


def assert_polite(result, code: int, *expected: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # no exception escaped the command
    assert "Traceback" not in result.output and PASSWORD not in result.output
    assert len(result.stderr.strip().splitlines()) >= 1
    for text in expected:
        assert text in result.stderr, result.stderr


DATABASE_COMMANDS = [
    ["list"], ["list", "--json"], ["status", "some-request"], ["cancel", "some-request", "--reason", "r"],
    ["rejected", "list"], ["rejected", "show", "1"], ["migrate"],
]


@pytest.mark.parametrize("args", DATABASE_COMMANDS, ids=" ".join)
def test_an_unreachable_database_is_named_with_host_and_port_in_one_line(env: dict[str, str], args: list[str]) -> None:
    only = {"DATABASE_URL": env["DATABASE_URL"]}  # nothing else is needed by these commands
    result = fulfil(only, *args)
    assert_polite(result, EXIT_UNAVAILABLE, f"database at 127.0.0.1:{port_of(env['DATABASE_URL'])} unreachable",
                  "Connection refused")
    assert len(result.stderr.strip().splitlines()) == 1


def test_retry_needs_both_and_names_the_database_first(env: dict[str, str]) -> None:
    result = fulfil({"DATABASE_URL": env["DATABASE_URL"], "BROKER_URL": env["BROKER_URL"]}, "retry", "x")
    assert_polite(result, EXIT_UNAVAILABLE, f"database at 127.0.0.1:{port_of(env['DATABASE_URL'])} unreachable")


BROKER_COMMANDS = [
    ["submit", "--request-id", "r-1", "--event-id", "5496123", "--section-name", "101", "--quantity", "2",
     "--delivery-deadline", "2031-01-01T00:00:00Z"],
    ["dlq", "list"], ["dlq", "list", "--json"], ["dlq", "show", "m-1"], ["dlq", "show", "m-1", "--json"],
    ["dlq", "purge", "--all", "--yes"], ["dlq", "replay", "--all", "--dry-run"],
]


@pytest.mark.parametrize("args", BROKER_COMMANDS, ids=" ".join)
def test_an_unreachable_broker_is_named_with_host_and_port_in_one_line(env: dict[str, str], args: list[str]) -> None:
    result = fulfil({"BROKER_URL": env["BROKER_URL"]}, *args)
    assert_polite(result, EXIT_UNAVAILABLE,
                  f"broker (RabbitMQ) at 127.0.0.1:{port_of(env['BROKER_URL'])} unreachable: ConnectionRefusedError")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_replay_checks_the_database_before_touching_the_broker(env: dict[str, str]) -> None:
    result = fulfil({"DATABASE_URL": env["DATABASE_URL"], "BROKER_URL": env["BROKER_URL"]}, "dlq", "replay", "--all")
    assert_polite(result, EXIT_UNAVAILABLE, f"database at 127.0.0.1:{port_of(env['DATABASE_URL'])} unreachable")


@pytest.mark.parametrize(
    ("args", "needed"),
    [
        (["migrate"], {"DATABASE_URL"}),
        (["list"], {"DATABASE_URL"}),
        (["status", "x"], {"DATABASE_URL"}),
        (["cancel", "x", "--reason", "r"], {"DATABASE_URL"}),
        (["rejected", "list"], {"DATABASE_URL"}),
        (["submit", "--request-id", "r", "--event-id", "1", "--section-name", "1", "--quantity", "1",
          "--delivery-deadline", "2031-01-01T00:00:00Z"], {"BROKER_URL"}),
        (["dlq", "list"], {"BROKER_URL"}),
        (["retry", "x"], {"DATABASE_URL", "BROKER_URL"}),
        (["dlq", "replay", "--all"], {"DATABASE_URL", "BROKER_URL"}),
        (["resolve", "x", "--order-id", "TBB-1"], {"DATABASE_URL", "TBB_BASE_URL", "TBB_CLIENT_ID", "TBB_CLIENT_SECRET"}),
        (["health"], {"DATABASE_URL", "BROKER_URL", "TBB_BASE_URL", "TBB_CLIENT_ID", "TBB_CLIENT_SECRET"}),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_each_command_asks_only_for_the_settings_it_uses(env: dict[str, str], args: list[str], needed: set[str]) -> None:
    result = fulfil({}, *args)
    assert_polite(result, EXIT_USAGE, "invalid configuration")
    named = {name for name in SETTINGS_VARIABLES if f"  {name}: is required but not set" in result.stderr}
    assert named == needed


def test_a_malformed_setting_is_named_without_its_value(env: dict[str, str]) -> None:
    result = fulfil({"DATABASE_URL": f"mysql://fulfil:{PASSWORD}@db/x"}, "list")
    assert_polite(result, EXIT_USAGE, "DATABASE_URL", "must be a postgresql://")


def test_a_bad_setting_another_command_uses_does_not_stop_migrate(env: dict[str, str]) -> None:
    # MAX_REQUOTES is policy, not used by `migrate`: only the database is tried (and is down).
    result = fulfil({"DATABASE_URL": env["DATABASE_URL"], "MAX_REQUOTES": "many"}, "migrate")
    assert_polite(result, EXIT_UNAVAILABLE, "database at 127.0.0.1:")


def test_usage_errors_and_choices_exit_2(env: dict[str, str]) -> None:
    for args in (["cancel", "x"], ["resolve", "x"], ["rejected", "show", "not-a-number"]):
        result = fulfil(env, *args)
        assert result.exit_code == EXIT_USAGE, (args, result.output)

    def refused_choice(*args: str) -> str:
        result = fulfil(env, *args)
        assert result.exit_code == EXIT_USAGE, (args, result.output)
        return re.sub(r"[\s│]", "", result.output)  # rich wraps the message inside a box

    assert "'received','quoted','ordering','order_unknown'" in refused_choice("list", "--state", "bogus")
    assert "'needs_attention','stalled'" in refused_choice("list", "--state", "bogus")
    assert "'submit_purchase','quote_purchase','place_order','resolve_order','check_transfer'" in refused_choice(
        "dlq", "replay", "--actor", "nobody")


def test_an_invalid_order_id_is_a_usage_error_before_anything_is_asked(env: dict[str, str]) -> None:
    result = fulfil(env, "resolve", "x", "--order-id", "../../admin")  # the database is down: not even asked
    assert_polite(result, EXIT_USAGE, "is not a partner order id")


def test_version_and_documented_exit_codes(env: dict[str, str]) -> None:
    version = fulfil({}, "--version")
    assert version.exit_code == 0 and version.stdout.startswith("fulfil (ticket-fulfilment) ")
    shown = " ".join(fulfil({}, "--help").output.split())
    for text in ("Exit codes: 0 done", "1 not found", "2 usage or configuration error", "3 a dependency is unreachable",
                 "4 refused"):
        assert text in shown
    assert (EXIT_NOT_FOUND, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_REFUSED) == (1, 2, 3, 4)


def test_the_installed_entry_point_prints_no_traceback(env: dict[str, str]) -> None:
    """The real process, not the test runner: one line on stderr, exit 3, nothing on stdout."""
    result = subprocess.run([sys.executable, "-m", "fulfilment.cli", "list"], cwd=REPO,
                            env={"PATH": "/usr/bin:/bin", "DATABASE_URL": env["DATABASE_URL"]},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_UNAVAILABLE, result.stderr
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    assert f"database at 127.0.0.1:{port_of(env['DATABASE_URL'])} unreachable" in result.stderr
    assert PASSWORD not in result.stderr and "Traceback" not in result.stderr
