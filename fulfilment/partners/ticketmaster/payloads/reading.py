"""Reading TM's JSON: each helper checks one value's shape and raises MalformedResponse naming where.
Private to the payloads package (parsers.py)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import SecretStr

from fulfilment.partners.ticketmaster.errors import MalformedResponse

# ---- parsing helpers ---------------------------------------------------------------------------


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedResponse(f"{where} is not an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedResponse(f"{where} is not a list")
    return value


def _opt_list(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    return [] if value is None else _list(value, f"{where}.{key}")


def _opt_str(obj: dict[str, Any], key: str, where: str, *, numbers: bool = True) -> str | None:
    """A string field; numbers are accepted (as text) unless `numbers` is False (ids whose leading
    zeros a number would have lost)."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if numbers and isinstance(value, int | Decimal) and not isinstance(value, bool):
        return format(value, "f") if isinstance(value, Decimal) else str(value)
    raise MalformedResponse(f"{where}.{key} is not a string")


def _req_str(obj: dict[str, Any], key: str, where: str, *, numbers: bool = True) -> str:
    value = _opt_str(obj, key, where, numbers=numbers)
    if not value:
        raise MalformedResponse(f"missing field {where}.{key}")
    return value


def _ticket_type_id(obj: dict[str, Any], key: str, where: str, *, required: bool) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise MalformedResponse(f"{where}.{key} is not a string id (a number would have lost its leading zeros)")
    return value


def _money(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise MalformedResponse(f"{where} is not an amount")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise MalformedResponse(f"{where} is not an amount: {str(value)[:40]!r}") from None
    if not amount.is_finite():
        raise MalformedResponse(f"{where} is not a finite amount")
    return amount


def _opt_money(obj: dict[str, Any], key: str, where: str) -> Decimal | None:
    value = obj.get(key)
    return None if value is None else _money(value, f"{where}.{key}")


def _opt_int(obj: dict[str, Any], key: str, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise MalformedResponse(f"{where}.{key} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise MalformedResponse(f"{where}.{key} is not an integer")


def _opt_bool(obj: dict[str, Any], key: str, where: str) -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise MalformedResponse(f"{where}.{key} is not a boolean")


def _ids(values: list[Any], where: str) -> tuple[str, ...]:
    out = []
    for i, value in enumerate(values):
        if isinstance(value, dict):
            value = value.get("id")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise MalformedResponse(f"{where}[{i}] has no id")
        out.append(str(value))
    return tuple(out)


def _secret(obj: dict[str, Any], key: str, where: str) -> SecretStr | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedResponse(f"{where}.{key} is not a string")
    return SecretStr(value)


def _epoch_ms(obj: dict[str, Any], key: str, where: str) -> dt.datetime | None:
    millis = _opt_int(obj, key, where)
    if millis is None:
        return None
    try:
        return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        raise MalformedResponse(f"{where}.{key} is not an epoch in milliseconds") from None


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
