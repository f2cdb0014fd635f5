"""Start-up configuration: clear errors naming the variable, never echoing secret values."""

from __future__ import annotations

import re

import pytest

from fulfilment.settings import ConsoleSettings, Settings, SettingsError, get_settings

VALID = {
    "DATABASE_URL": "postgresql://u:p@127.0.0.1:5432/db",
    "BROKER_URL": "amqp://u:p@127.0.0.1:5672/%2F",
    "TBB_BASE_URL": "http://127.0.0.1:18080",
    "TBB_CLIENT_ID": "partner-a",
    "TBB_CLIENT_SECRET": "very-secret-value",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for name in [*VALID, "DEADLINE_WARNING_HOURS", "MAX_REQUOTES", "LOG_LEVEL"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir("/")  # no stray .env file
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_valid_environment_loads_and_normalises_the_driver(env: pytest.MonkeyPatch) -> None:
    for key, value in VALID.items():
        env.setenv(key, value)
    env.setenv("DEADLINE_WARNING_HOURS", "48, 6")
    settings = get_settings()
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.deadline_warning_hours == (48.0, 6.0)
    assert "very-secret-value" not in repr(settings)


def test_missing_variables_are_each_named(env: pytest.MonkeyPatch) -> None:
    env.setenv("TBB_CLIENT_ID", "x")
    with pytest.raises(SettingsError) as raised:
        get_settings()
    message = str(raised.value)
    for name in ("DATABASE_URL", "BROKER_URL", "TBB_BASE_URL", "TBB_CLIENT_SECRET"):
        assert f"{name}: is required but not set" in message
    assert "TBB_CLIENT_ID" not in message


@pytest.mark.parametrize(
    ("name", "value"),
    [("DATABASE_URL", "mysql://x"), ("BROKER_URL", "redis://x"), ("MAX_REQUOTES", "many"),
     ("LOG_LEVEL", "LOUD"), ("TBB_BASE_URL", "not a url")],
)
def test_malformed_values_are_named_without_their_value(env: pytest.MonkeyPatch, name: str, value: str) -> None:
    for key, good in VALID.items():
        env.setenv(key, good)
    env.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        get_settings()
    assert name in str(raised.value)
    assert "very-secret-value" not in str(raised.value)


def test_defaults_keep_broker_delays_short() -> None:
    # Invariant 7: dramatiq's retry backoff stays far below RabbitMQ's 30 min consumer_timeout.
    assert Settings.model_fields["actor_max_backoff_ms"].default <= 60_000


def test_env_example_documents_exactly_the_settings() -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / ".env.example"
    # Optional settings with no default appear commented out, as "# NAME=example".
    names = {match.group(1) for line in example.read_text().splitlines()
             if (match := re.match(r"^(?:# )?([A-Z][A-Z0-9_]+)=", line))}
    # Settings (every process) and ConsoleSettings (`fulfil console` only).
    assert names == {name.upper() for name in (*Settings.model_fields, *ConsoleSettings.model_fields)}


def test_a_step_deadline_that_could_outlive_the_claim_lease_is_refused(env: pytest.MonkeyPatch) -> None:
    for name, value in VALID.items():
        env.setenv(name, value)
    env.setenv("CLAIM_LEASE_SECONDS", "30")
    env.setenv("STEP_DEADLINE_SECONDS", "28")
    with pytest.raises(SettingsError) as raised:
        get_settings()
    assert "STEP_DEADLINE_SECONDS (28) must end at least 5 s before CLAIM_LEASE_SECONDS (30)" in str(raised.value)
    env.setenv("STEP_DEADLINE_SECONDS", "25")
    get_settings.cache_clear()
    assert get_settings().step_deadline_seconds == 25


def test_a_delivery_lead_shorter_than_the_step_deadline_is_refused(env: pytest.MonkeyPatch) -> None:
    # A step checks the delivery deadline once, then may send its order until its own deadline:
    # with less lead than that, an order could be sent after the delivery deadline.
    for name, value in VALID.items():
        env.setenv(name, value)
    env.setenv("CLAIM_LEASE_SECONDS", "120")
    env.setenv("STEP_DEADLINE_SECONDS", "60")
    env.setenv("MIN_DELIVERY_LEAD_SECONDS", "59")
    with pytest.raises(SettingsError) as raised:
        get_settings()
    assert "MIN_DELIVERY_LEAD_SECONDS (59) must be at least STEP_DEADLINE_SECONDS (60)" in str(raised.value)
    assert "after the delivery deadline" in str(raised.value)
    env.setenv("MIN_DELIVERY_LEAD_SECONDS", "60")
    get_settings.cache_clear()
    assert get_settings().min_delivery_lead_seconds == 60


def test_a_multi_host_database_url_becomes_sqlalchemys_host_list_and_is_named_without_password() -> None:
    from sqlalchemy.engine import make_url

    from fulfilment.dependencies import location
    from fulfilment.settings import DatabaseSettings

    settings = DatabaseSettings(database_url="postgresql://fulfil:pw@10.0.0.1:5432,10.0.0.2:5433/fulfil"
                                             "?target_session_attrs=read-write")
    url = make_url(settings.database_url)
    assert url.drivername == "postgresql+psycopg" and url.database == "fulfil" and url.password == "pw"
    assert url.query["host"] == ("10.0.0.1:5432", "10.0.0.2:5433")
    assert url.query["target_session_attrs"] == "read-write"
    assert location(settings.database_url) == "10.0.0.1:5432, 10.0.0.2:5433"
    one = "postgresql+psycopg://fulfil:pw@10.0.0.1:5432/fulfil"
    assert DatabaseSettings(database_url=one).database_url == one


def test_broker_url_may_name_several_nodes_and_queue_settings_are_checked() -> None:
    import pytest
    from pydantic import ValidationError

    from fulfilment.settings import BrokerSettings

    nodes = "amqp://u:p@h1:5672/%2F; amqp://u:p@h2:5672/%2F"
    settings = BrokerSettings(broker_url=nodes)
    assert settings.broker_url == "amqp://u:p@h1:5672/%2F;amqp://u:p@h2:5672/%2F"
    assert settings.broker_queue_type == "classic"
    with pytest.raises(ValidationError, match="amqp"):
        BrokerSettings(broker_url="amqp://u:p@h1/%2F;http://h2")
    with pytest.raises(ValidationError, match="broker_queue_type"):
        BrokerSettings(broker_url=nodes, broker_queue_type="mirrored")
