"""`fulfil`: the command line of ticket-fulfilment (operators and developers).

One module per group of commands; importing them registers the commands on `app`.
"""

from fulfilment.cli import dlq, purchases, service  # noqa: F401  (registers the commands)
from fulfilment.cli.common import REPO_ROOT, app
from fulfilment.cli.service import request_schema

__all__ = ["REPO_ROOT", "app", "request_schema"]
