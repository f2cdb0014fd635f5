"""`fulfil submit`'s options come from the request models (fulfilment/cli/request_options.py).

No servers: what reaches RabbitMQ is checked in tests/integration/test_cli_submit.py.  Here: every
field of every partner's request is an option, a field added to a model becomes one with no CLI
edit, the chosen partner's model judges what was given, and a secret is never taken from argv.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest
import typer
from pydantic import Field, SecretStr
from typer.testing import CliRunner

from fulfilment.cli import app
from fulfilment.cli.common import EXIT_USAGE
from fulfilment.cli.request_options import (
    OptionError,
    is_secret,
    parameters,
    request_fields,
    request_models,
    request_options,
)
from fulfilment.requests import AnyPurchaseRequest, PurchaseRequest, TicketmasterRequest, parse_request
from fulfilment.settings import get_settings

DEADLINE = "2031-01-01T00:00:00Z"
TM_ARGS = ["--partner", "ticketmaster", "--request-id", "tm-1", "--event-id", "000051048D991EE7",
           "--ticket-type-id", "000000000001", "--quantity", "2", "--max-unit-price", "60",
           "--third-party-account-id", "user-8841", "--delivery-deadline", DEADLINE]


def test_every_field_of_every_partner_is_an_option_of_submit() -> None:
    command = typer.main.get_command(app).commands["submit"]  # type: ignore[attr-defined]
    flags = {flag for param in command.params for flag in param.opts}
    for model in (PurchaseRequest, TicketmasterRequest):
        for name in model.model_fields:
            assert "--" + name.replace("_", "-") in flags, name
    assert request_models(AnyPurchaseRequest) == {"tbb": PurchaseRequest, "ticketmaster": TicketmasterRequest}


@pytest.fixture
def no_broker(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("BROKER_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env
    get_settings.cache_clear()


def submit(*args: str, **kwargs: Any):  # type: ignore[no-untyped-def]
    get_settings.cache_clear()
    return CliRunner().invoke(app, ["submit", *args], **kwargs)


def test_a_ticketmaster_request_on_the_command_line_is_validated_as_one(no_broker: None) -> None:
    # Valid: the only thing missing is where to send it.
    result = submit(*TM_ARGS)
    assert result.exit_code == EXIT_USAGE and "BROKER_URL: is required but not set" in result.stderr, result.stderr
    # Ticketmaster's model judges it: TBB's delivery type is not one of its fields, its own are required.
    result = submit(*TM_ARGS[:2], "--request-id", "tm-2", "--quantity", "1", "--event-id", "000051048D991EE7",
                    "--delivery-deadline", DEADLINE, "--delivery-type", "pdf")
    assert result.exit_code == EXIT_USAGE
    assert result.stderr.strip() == ("invalid request: ticket_type_id: Field required; max_unit_price: Field "
                                     "required; third_party_account_id: Field required; delivery_type: unknown field")


def test_a_tbb_request_keeps_its_options_and_default_delivery_type(no_broker: None) -> None:
    result = submit("--request-id", "r-1", "--event-id", "5496123", "--section-name", "101", "--quantity", "2",
                    "--delivery-deadline", DEADLINE)
    assert "BROKER_URL: is required but not set" in result.stderr, result.stderr  # valid: mobile_transfer
    result = submit("--request-id", "r-1", "--event-id", "5496123", "--quantity", "2", "--delivery-deadline",
                    DEADLINE, "--ticket-type-id", "000000000001")
    assert result.stderr.strip() == "invalid request: section_name: Field required; ticket_type_id: unknown field"
    result = submit("--request-id", "r-1", "--event-id", "5496123", "--section-name", "101", "--quantity", "2",
                    "--delivery-deadline", DEADLINE, "--metadata", "{not json")
    assert result.exit_code == EXIT_USAGE and result.stderr.startswith("--metadata is not valid JSON")


def test_the_help_says_which_partner_takes_and_requires_each_option() -> None:
    options = {o.name: o for o in request_options(request_models(AnyPurchaseRequest))}
    assert options["ticket_type_id"].partners == {"ticketmaster": True}
    assert options["section_name"].partners == {"tbb": True, "ticketmaster": False}
    assert options["max_unit_price"].describe().endswith("[tbb, ticketmaster (required)]")
    assert (options["metadata"].kind, options["quantity"].kind, options["event_start"].kind) == ("json", "int", "text")


# ---- a field added to a request model: an option at once; a secret never from argv --------------

class NewerTicketmasterRequest(TicketmasterRequest):
    """What the lead is adding (a per-purchase nonce, the fan's device), as a model would declare it."""

    payment_nonce: SecretStr | None = Field(default=None, description="A one-time payment nonce.")
    fan_device: dict[str, str] | None = Field(default=None, description="The fan's device.")
    seats_wanted: int | None = None


MODELS = {"tbb": PurchaseRequest, "ticketmaster": NewerTicketmasterRequest}


def newer_app() -> typer.Typer:
    """A command built from MODELS exactly as `fulfil submit` is built from requests.py; prints the
    request its partner's model accepted."""
    options = request_options(MODELS)
    command = typer.Typer()

    def show(**values: Any) -> None:
        try:
            fields = request_fields(values, options)
        except OptionError as error:
            typer.echo(f"refused: {error}", err=True)
            raise typer.Exit(2) from None
        request = MODELS[fields["partner"]].model_validate(fields)
        typer.echo(json.dumps({**request.model_dump(mode="json", exclude_none=True), "nonce": (
            request.payment_nonce.get_secret_value() if getattr(request, "payment_nonce", None) else None)}))

    show.__signature__ = inspect.Signature(parameters(options, list(MODELS), "tbb"))  # type: ignore[attr-defined]
    command.command()(show)
    command.command("other")(lambda: None)  # two commands: `show` is addressed by name
    return command


def run_newer(*args: str, **kwargs: Any):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(newer_app(), ["show", *TM_ARGS, *args], **kwargs)


def test_a_new_field_is_an_option_typed_from_the_model() -> None:
    result = run_newer("--fan-device", '{"device_id": "d-1", "device_os": "ios"}', "--seats-wanted", "2")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["fan_device"] == {"device_id": "d-1", "device_os": "ios"} and shown["seats_wanted"] == 2
    assert shown["nonce"] is None


@pytest.mark.parametrize("source", ["file", "stdin", "environment"])
def test_a_secret_field_is_read_from_a_file_stdin_or_the_environment(source: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    nonce = "fake-valid-nonce-0042"
    if source == "file":
        path = tmp_path / "nonce"
        path.write_text(nonce + "\n")
        result = run_newer("--payment-nonce-file", str(path))
    elif source == "stdin":
        result = run_newer("--payment-nonce-file", "-", input=nonce + "\n")
    else:
        result = run_newer(env={"FULFIL_SUBMIT_PAYMENT_NONCE": nonce})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["nonce"] == nonce


def test_a_secret_on_the_command_line_is_refused_and_not_echoed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run_newer("--payment-nonce", "fake-valid-nonce-0042")
    assert result.exit_code == 2
    assert "--payment-nonce is a secret and is not taken on the command line" in result.stderr
    assert "--payment-nonce-file FILE" in result.stderr and "$FULFIL_SUBMIT_PAYMENT_NONCE" in result.stderr
    assert "fake-valid-nonce-0042" not in result.output
    result = run_newer("--payment-nonce-file", str(tmp_path / "absent"))
    assert result.exit_code == 2 and "cannot read" in result.stderr
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert "is empty" in run_newer("--payment-nonce-file", str(empty)).stderr


def test_the_help_of_a_secret_names_its_file_option_and_variable() -> None:
    result = CliRunner().invoke(newer_app(), ["show", "--help"], env={"COLUMNS": "300"})
    assert "--payment-nonce-file" in result.stdout and "$FULFIL_SUBMIT_PAYMENT_NONCE" in result.stdout
    assert "--payment-nonce " not in result.stdout  # hidden: only there to be refused


@pytest.mark.parametrize(("name", "annotation", "secret"), [
    ("payment_nonce", str, True), ("card_token", str, True), ("cin", SecretStr, True),
    ("third_party_account_id", str, False), ("event_id", str, False)])
def test_secrets_are_recognised_by_type_or_name(name: str, annotation: type, secret: bool) -> None:
    from pydantic.fields import FieldInfo

    assert is_secret(name, FieldInfo(annotation=annotation)) is secret


def test_what_submit_builds_is_what_submit_json_accepts() -> None:
    options = request_options(request_models(AnyPurchaseRequest))
    values: dict[str, Any] = {"partner": "ticketmaster", "request_id": "tm-1", "event_id": "000051048D991EE7",
                              "ticket_type_id": "000000000001", "quantity": 2, "max_unit_price": "60",
                              "third_party_account_id": "user-8841", "delivery_deadline": DEADLINE,
                              "metadata": '{"basket": "b-1"}'}
    request = parse_request(request_fields(values, options))
    assert isinstance(request, TicketmasterRequest) and request.metadata == {"basket": "b-1"}
    assert request.ticket_type_id == "000000000001"  # a string: leading zeros kept
