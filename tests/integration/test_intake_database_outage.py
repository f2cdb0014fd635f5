"""Intake while Postgres is unavailable (invariant 9), against real servers and a dead port.

The outage itself, with real workers and a private Postgres stopped for longer than the
whole retry budget, is in tests/e2e/test_database_outage.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid

import psycopg
import pytest
from sqlalchemy import create_engine, text

from fulfilment import dependencies
from fulfilment.settings import get_settings
from fulfilment.steps import intake
from tests.support.factories import request
from tests.support.servers import REPO, free_port

SECRET = "pw-" + uuid.uuid4().hex  # must never reach a log line or an output


def dead_database_url() -> str:
    """Nothing listens there: what every connection sees while Postgres is down."""
    return f"postgresql+psycopg://fulfil:{SECRET}@127.0.0.1:{free_port()}/fulfil"


def fulfil(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fulfilment.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def error_from(url: str, sql: str = "SELECT 1") -> BaseException:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text(sql))
    except Exception as error:  # noqa: BLE001  the error is what we want
        return error
    finally:
        engine.dispose()
    raise AssertionError(f"{sql!r} did not fail")


def test_unreachable_database_errors_are_told_apart_from_bad_sql_and_bad_input() -> None:
    down = error_from(dead_database_url())
    assert dependencies.is_database_unavailable(down)
    assert dependencies.is_database_unavailable(psycopg.OperationalError("server closed the connection unexpectedly"))
    try:
        raise RuntimeError("wrapped") from down
    except RuntimeError as wrapped:
        assert dependencies.is_database_unavailable(wrapped)
    described = dependencies.describe_database_error(down)
    assert "Connection refused" in described and SECRET not in described and "\n" not in described

    url = get_settings().database_url  # the live test database
    assert not dependencies.is_database_unavailable(error_from(url, "SELECT 1/0"))
    assert not dependencies.is_database_unavailable(error_from(url, "SELECT * FROM no_such_table"))
    assert not dependencies.is_database_unavailable(intake.InvalidPurchaseRequest("INVALID_REQUEST", "quantity"))
    assert not dependencies.is_database_unavailable(ValueError("a bug"))


def test_a_rejection_that_cannot_be_recorded_during_an_outage_is_a_wait_not_a_drop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", dead_database_url())
    get_settings.cache_clear()
    try:
        with pytest.raises(Exception) as raised:  # any error, as long as it is not a rejection
            intake.accept(request(quantity=-1), settings=get_settings())
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert not isinstance(raised.value, intake.InvalidPurchaseRequest)
    assert dependencies.is_database_unavailable(raised.value)


# Run in a child process: importing `workers` replaces the root log handlers and sets
# dramatiq's global broker (as `dramatiq workers` does).
ACTOR_CHECK = textwrap.dedent(
    """
    import json, sys
    from dramatiq.middleware import CurrentMessage
    from workers.intake import WAITS_OPTION, DatabaseUnavailable, retry_intake, submit_purchase

    class Message:
        message_id = "m-1"
        def __init__(self, options):
            self.options = options

    body = json.loads(sys.argv[1])
    results = {}
    message = Message({"retries": 40, WAITS_OPTION: 39})  # 39 waits for the database, 1 other failure
    CurrentMessage._MESSAGE.set(message)
    try:
        submit_purchase.fn(body)
    except DatabaseUnavailable as error:
        try:
            submit_purchase.fn(body)  # the same wait again: counted, not logged again
        except DatabaseUnavailable:
            pass
        results["raised"] = "DatabaseUnavailable"
        results["waits"] = message.options[WAITS_OPTION]
        results["retry_db"] = retry_intake(40, error)
        results["retry_db_after_1000"] = retry_intake(1000, error)
    # Other failures keep the limit (ACTOR_MAX_RETRIES=2), counting only themselves.
    message.options = {"retries": 41, WAITS_OPTION: 40}
    results["retry_bug_after_1_failure"] = retry_intake(41, ValueError("bug"))
    message.options = {"retries": 42, WAITS_OPTION: 40}
    results["retry_bug_after_2_failures"] = retry_intake(42, ValueError("bug"))
    message.options = {"retries": 2, WAITS_OPTION: 40}  # replayed dead letter: retries reset, waits stale
    results["retry_bug_after_replay"] = retry_intake(2, ValueError("bug"))
    CurrentMessage._MESSAGE.set(None)
    results["retry_bug_without_message"] = retry_intake(2, ValueError("bug"))
    # retry_intake reads the current message: CurrentMessage must clear it only after Retries
    # decided (dramatiq runs after_* hooks in reverse order of the middleware list).
    import dramatiq
    names = [type(m).__name__ for m in dramatiq.get_broker().middleware]
    results["message_still_current_when_retries_decides"] = names.index("CurrentMessage") < names.index("Retries")
    print(json.dumps(results))
    """
)


def test_the_intake_actor_waits_for_the_database_without_limit_and_other_errors_keep_theirs(
    configured: dict[str, str],
) -> None:
    env = {**configured, "DATABASE_URL": dead_database_url(), "ACTOR_MAX_RETRIES": "2"}
    bad = request(quantity=-1)  # its rejection cannot be recorded while the database is down
    done = subprocess.run([sys.executable, "-c", ACTOR_CHECK, json.dumps(bad)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results == {
        "raised": "DatabaseUnavailable", "waits": 41, "retry_db": True, "retry_db_after_1000": True,
        "retry_bug_after_1_failure": True, "retry_bug_after_2_failures": False,
        "retry_bug_after_replay": False, "retry_bug_without_message": False,
        "message_still_current_when_retries_decides": True,
    }
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    waiting = [line for line in lines if "intake waiting for the database" in line["message"]]
    # One line for the outage, not one per wait (fulfilment/outages.py), with the message's ids.
    assert len(waiting) == 1 and waiting[0]["level"] == "warning", waiting
    assert waiting[0]["message"].startswith("database (Postgres) down: intake waiting for the database")
    assert "Connection refused" in waiting[0]["message"]
    assert SECRET not in done.stderr


def test_health_says_the_database_is_down_without_its_password(configured: dict[str, str]) -> None:
    checked = fulfil({**configured, "DATABASE_URL": dead_database_url()}, "health")
    assert checked.returncode == 3
    [line] = [line for line in checked.stdout.splitlines() if line.startswith("database")]
    assert "FAILED" in line and "DatabaseDown: down:" in line and "Connection refused" in line
    assert "intake retries them until the database is back" in line
    assert SECRET not in checked.stdout + checked.stderr


def test_status_of_a_purchase_not_recorded_yet_says_so_and_shows_the_intake_queue(configured: dict[str, str]) -> None:
    purchase_id = str(uuid.uuid4())
    shown = fulfil(dict(configured), "status", purchase_id)
    assert shown.returncode == 1
    assert f"no purchase recorded yet for '{purchase_id}' (purchase id {purchase_id})" in shown.stderr
    assert "intake queue now: " in shown.stderr and "dead-lettered" in shown.stderr

    by_request = fulfil(dict(configured), "status", "never-submitted-" + uuid.uuid4().hex)
    assert by_request.returncode == 1 and "no purchase recorded yet" in by_request.stderr

    unreachable_broker = {**configured, "BROKER_URL": f"amqp://fulfil:{SECRET}@127.0.0.1:{free_port()}/%2F"}
    shown = fulfil(unreachable_broker, "status", purchase_id)
    assert shown.returncode == 1 and "RabbitMQ not reachable" in shown.stderr and SECRET not in shown.stderr


def test_status_of_a_rejected_request_names_the_rejection(configured: dict[str, str]) -> None:
    body = request(quantity=-1)
    with pytest.raises(intake.InvalidPurchaseRequest):
        intake.accept(body, settings=get_settings())
    shown = fulfil(dict(configured), "status", body["request_id"])
    assert shown.returncode == 1
    assert "the request was rejected at" in shown.stderr and "INVALID_REQUEST" in shown.stderr
