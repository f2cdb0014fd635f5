"""The README's required-settings table says what fulfilment/settings.py requires: the variables
every process needs, and those each partner needs once it is enabled -- no more, no fewer."""

from __future__ import annotations

import re

from fulfilment.settings import BrokerSettings, DatabaseSettings, PartnerSettings, required_when_enabled
from tests.support.servers import REPO

# The README's words for a partner in the table's "required" column.
PARTNER_WORDS = {"TBB": "tbb", "Ticketmaster": "ticketmaster"}


def readme_table() -> dict[str, set[str]]:
    """{"always" or a partner: the variables the README's table lists as required then}."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n## Configuration"):]
    section = section[:section.index("\n## ", 1)]
    header = section.index("| variable | required | meaning |")
    rows = section[header:].split("\n\n", 1)[0].splitlines()[2:]
    table: dict[str, set[str]] = {}
    for row in rows:
        variables, when = (cell.strip() for cell in row.strip("|").split("|")[:2])
        key = "always" if when == "always" else PARTNER_WORDS[when.removesuffix(" enabled")]
        table.setdefault(key, set()).update(re.findall(r"`([A-Z][A-Z0-9_]+)`", variables))
    return table


def test_the_readme_lists_exactly_the_variables_settings_require() -> None:
    always = {name.upper() for part in (DatabaseSettings, BrokerSettings)
              for name, info in part.model_fields.items() if info.is_required()}
    assert not [name for name, info in PartnerSettings.model_fields.items() if info.is_required()]  # all per partner
    expected = {"always": always, **{partner: set(names) for partner, names in required_when_enabled().items()}}
    assert readme_table() == expected


def test_each_partner_s_required_variables_are_enforced_when_it_is_enabled(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """What the table (through required_when_enabled) says is what validation refuses without."""
    import pydantic
    import pytest

    monkeypatch.chdir(tmp_path)
    for name in PartnerSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("TBB_ENABLED", "true")
    monkeypatch.setenv("TM_ENABLED", "true")
    with pytest.raises(pydantic.ValidationError) as raised:
        PartnerSettings()
    named = set(re.findall(r"[A-Z][A-Z0-9_]{2,}", str(raised.value)))
    assert named >= {name for names in required_when_enabled().values() for name in names}
