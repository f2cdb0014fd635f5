"""`fulfil submit`'s options, derived from the request models (fulfilment/requests.py).

Every field of every partner's request is an option (`request_id` is `--request-id`), with the
field's description as its help, so a field added to a request model needs no CLI edit.  Which
fields a partner takes and which it requires is the model's business: the options are all
optional here, and the chosen partner's model validates what was given (an unknown field for that
partner, or a missing one, is named in one line, as `submit-json` names it).

How a field is read from the command line follows its type:
- int, float, bool: typed options (`--quantity 2`);
- an object or a list (`metadata`, a nested model): JSON (`--metadata '{"basket": "b-1"}'`);
- anything else (strings, dates, decimals, enums): the text, parsed by the model;
- a **secret** (a `SecretStr` field, one whose schema says `writeOnly`/`format: password`, or one
  whose name says nonce, secret, password or token) is never taken on the command line, where `ps`
  shows it to every user of the machine: `--<name>-file FILE` reads it from a file (`-`: stdin,
  one line) and the environment variable `FULFIL_SUBMIT_<NAME>` holds it otherwise.  `--<name> VALUE`
  is refused with a message saying so.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, Optional

import typer
from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic.fields import FieldInfo

# The partner's name is the `partner` field's Literal value in each request model.
PARTNER_FIELD = "partner"
SECRET_NAME = re.compile(r"nonce|secret|password|token", re.IGNORECASE)
SECRET_ENV_PREFIX = "FULFIL_SUBMIT_"


class OptionError(ValueError):
    """A value given on the command line cannot be read (bad JSON, an unreadable file, a secret on argv)."""


@dataclass
class RequestOption:
    """One request field, as `fulfil submit` takes it."""

    name: str  # the field's name
    kind: str  # "int" | "float" | "bool" | "json" | "text" | "secret"
    help: str
    partners: dict[str, bool] = field(default_factory=dict)  # partner -> required by it
    defaults: dict[str, Any] = field(default_factory=dict)  # partner -> the CLI's default, where it has one

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return SECRET_ENV_PREFIX + self.name.upper()

    def describe(self) -> str:
        takes = ", ".join(f"{p} (default {self.defaults[p]})" if p in self.defaults
                          else f"{p} (required)" if required else p for p, required in self.partners.items())
        text = self.help.rstrip(".") + "." if self.help else ""
        return f"{text} [{takes}]".strip()


def partner_of(model: type[BaseModel]) -> str:
    """A request model's partner: the value of its `partner` Literal."""
    values = typing.get_args(_unwrap(model.model_fields[PARTNER_FIELD].annotation))
    if len(values) != 1:
        raise TypeError(f"{model.__name__}.{PARTNER_FIELD} must be a Literal of one value")
    return str(values[0])


def request_models(union: Any) -> dict[str, type[BaseModel]]:
    """{partner: model} of a union of request models (requests.AnyPurchaseRequest)."""
    return {partner_of(model): model for model in typing.get_args(union)}


def _unwrap(annotation: Any) -> Any:
    """The type under Annotated[...] and Optional[...] (X | None)."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return annotation


def is_secret(name: str, info: FieldInfo) -> bool:
    annotation = _unwrap(info.annotation)
    if isinstance(annotation, type) and issubclass(annotation, SecretStr | SecretBytes):
        return True
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if extra.get("writeOnly") or extra.get("format") == "password":
        return True
    return bool(SECRET_NAME.search(name))


def _kind(name: str, info: FieldInfo) -> str:
    if is_secret(name, info):
        return "secret"
    annotation = _unwrap(info.annotation)
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    origin = typing.get_origin(annotation) or annotation
    if isinstance(origin, type) and (issubclass(origin, dict | list | tuple | set | BaseModel)):
        return "json"
    return "text"


def request_options(models: Mapping[str, type[BaseModel]],
                    defaults: Mapping[tuple[str, str], Any] = {}) -> list[RequestOption]:
    """The options for these request models, in field order (first model first); `defaults`
    ({(partner, field): value}) are the CLI's own, for fields not given."""
    options: dict[str, RequestOption] = {}
    for partner, model in models.items():
        for name, info in model.model_fields.items():
            if name == PARTNER_FIELD:
                continue
            option = options.get(name)
            if option is None:
                option = options[name] = RequestOption(name, _kind(name, info), _help(info))
            elif option.kind != _kind(name, info):
                raise TypeError(f"request field {name!r} has different kinds across partners")
            option.partners[partner] = info.is_required()
            if (partner, name) in defaults:
                option.defaults[partner] = defaults[partner, name]
    return list(options.values())


def _help(info: FieldInfo) -> str:
    text = info.description or ""
    annotation = _unwrap(info.annotation)
    choices: list[str] = []
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        choices = [str(member.value) for member in annotation]
    elif typing.get_origin(annotation) is typing.Literal:
        choices = [str(value) for value in typing.get_args(annotation)]
    if choices:
        text = f"{text} One of: {', '.join(choices)}.".strip()
    if annotation in (dt.datetime, dt.date) and "e.g." not in text:
        text = f"{text} ISO-8601 with an offset, e.g. 2026-09-12T18:00:00Z.".strip()
    return text


_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "json": str, "text": str, "secret": str}


def parameters(options: list[RequestOption], partners: list[str], default_partner: str) -> list[inspect.Parameter]:
    """The command's parameters, as typer reads them from a signature."""
    choice = StrEnum("Partner", {name: name for name in partners})  # type: ignore[misc]  # typer shows the choices
    params = [inspect.Parameter(
        PARTNER_FIELD, inspect.Parameter.KEYWORD_ONLY, annotation=choice,
        default=typer.Option(choice(default_partner), "--partner", help="Whose request this is."),
    )]
    for option in options:
        if option.kind == "secret":
            params.append(inspect.Parameter(
                f"{option.name}__file", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
                default=typer.Option(None, f"{option.flag}-file", metavar="FILE",
                                     help=f"{option.describe()} A secret: read from FILE (- for stdin), or from "
                                          f"${option.env}; never given on the command line.")))
            # Only to refuse it with a clear message: argv is visible to every user (`ps`).
            params.append(inspect.Parameter(
                f"{option.name}__argv", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
                default=typer.Option(None, option.flag, hidden=True)))
            continue
        help_text = option.describe() + (" As JSON." if option.kind == "json" else "")
        params.append(inspect.Parameter(
            option.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[_TYPES[option.kind]],
            default=typer.Option(None, option.flag, help=help_text,
                                 metavar="JSON" if option.kind == "json" else None)))
    return params


def request_fields(values: Mapping[str, Any], options: list[RequestOption], *,
                   stdin: Callable[[], str] = lambda: sys.stdin.read()) -> dict[str, Any]:
    """The raw request (for the partner's model to validate) from the command's values.

    Only what was given is included, plus the options' defaults for the partner's fields not given.
    Raises OptionError naming the option when a value cannot be read.
    """
    partner = str(values[PARTNER_FIELD])
    fields: dict[str, Any] = {PARTNER_FIELD: partner}
    for option in options:
        if option.kind == "secret":
            value = _secret(option, values.get(f"{option.name}__file"), values.get(f"{option.name}__argv"), stdin)
        else:
            value = values.get(option.name)
            if value is not None and option.kind == "json":
                try:
                    value = json.loads(value)
                except ValueError as error:
                    raise OptionError(f"{option.flag} is not valid JSON: {error}") from None
        if value is None:
            value = option.defaults.get(partner)
        if value is not None:
            fields[option.name] = value
    return fields


def _secret(option: RequestOption, path: str | None, argv: str | None, stdin: Callable[[], str]) -> str | None:
    if argv is not None:
        raise OptionError(f"{option.flag} is a secret and is not taken on the command line (every user of the "
                          f"machine sees it in `ps`): use {option.flag}-file FILE (- for stdin) or ${option.env}")
    if path is None:
        return os.environ.get(option.env) or None
    try:
        text = stdin() if path == "-" else Path(path).read_text()
    except OSError as error:
        raise OptionError(f"{option.flag}-file: cannot read {path}: {error.strerror or error}") from None
    value = text.strip()
    if not value:
        raise OptionError(f"{option.flag}-file: {'stdin' if path == '-' else path} is empty")
    return value
