"""What the console runs with: `ConsoleConfig`, read from the environment by `config_from_environment()`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fulfilment.console.auth import User, load_users
from fulfilment.settings import BrokerSettings, ConsoleSettings, PartnerSettings, PolicySettings, SettingsError


@dataclass(frozen=True)
class ConsoleConfig:
    """Everything the console needs.  The database is the process's own (DATABASE_URL, fulfilment.db)."""

    settings: ConsoleSettings
    users: dict[str, User]
    database_url: str  # shown as host:port only
    broker_url: str
    policy: PolicySettings
    partner: PartnerSettings | None  # None: recording a found order is not available


def config_from_environment() -> ConsoleConfig:
    """Read and check every setting the console uses; SettingsError names each bad one.

    The partner's variables are optional: without them the console works, but cannot record an
    order found at the partner (it must fetch the order first).
    """
    from fulfilment.settings import (
        get_broker_settings,
        get_console_settings,
        get_database_settings,
        get_partner_settings,
        get_policy_settings,
    )

    problems: list[str] = []
    loaded: dict[str, Any] = {}
    for name, loader in (("console", get_console_settings), ("database", get_database_settings),
                         ("broker", get_broker_settings), ("policy", get_policy_settings)):
        try:
            loaded[name] = loader()
        except SettingsError as error:
            problems.extend(line for line in str(error).splitlines()[1:] if line not in problems)
    users: dict[str, User] = {}
    if "console" in loaded:
        try:
            users = load_users(loaded["console"])  # none at all is refused here
        except SettingsError as error:
            problems.extend(str(error).splitlines()[1:])
    if problems:
        raise SettingsError("invalid configuration:\n" + "\n".join(problems))
    try:
        partner: PartnerSettings | None = get_partner_settings()
    except SettingsError:
        partner = None
    broker: BrokerSettings = loaded["broker"]
    return ConsoleConfig(settings=loaded["console"], users=users,
                         database_url=loaded["database"].database_url, broker_url=broker.broker_url,
                         policy=loaded["policy"], partner=partner)
