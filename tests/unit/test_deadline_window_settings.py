"""DEADLINE_WARNING_HOURS is kept to hundredths, as deadline_flags.window_hours (numeric(8,2)) stores it."""

from __future__ import annotations

import pytest

from fulfilment.settings import SettingsError, get_settings

REQUIRED = {
    "DATABASE_URL": "postgresql://u:p@127.0.0.1:5432/db",
    "BROKER_URL": "amqp://u:p@127.0.0.1:5672/%2F",
    "TBB_BASE_URL": "http://127.0.0.1:18080",
    "TBB_CLIENT_ID": "partner-a",
    "TBB_CLIENT_SECRET": "very-secret-value",
}


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Set DEADLINE_WARNING_HOURS, return what the settings make of it."""
    monkeypatch.chdir("/")  # no stray .env file
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)

    def load(value: str) -> tuple[float, ...]:
        monkeypatch.setenv("DEADLINE_WARNING_HOURS", value)
        get_settings.cache_clear()
        return get_settings().deadline_warning_hours

    yield load
    get_settings.cache_clear()


def test_windows_finer_than_hundredths_are_rounded_as_postgres_rounds_them(windows) -> None:  # type: ignore[no-untyped-def]
    assert windows("0.333") == (0.33,)
    assert windows("24, 2, 0.125, 0.345") == (24.0, 2.0, 0.13, 0.35)  # half up, in the order given
    assert windows("0.333, 0.3349, 2") == (0.33, 2.0)  # one window, not two that are both stored as 0.33
    assert windows("") == ()


@pytest.mark.parametrize("value", ["1000000", "inf", "nan", "24, -inf"])
def test_windows_the_flags_column_cannot_hold_are_refused(windows, value: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SettingsError) as raised:
        windows(value)
    assert "DEADLINE_WARNING_HOURS" in str(raised.value) and "below 1000000" in str(raised.value)
