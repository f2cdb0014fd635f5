"""`fulfil`: the command line of ticket-fulfilment (operators and developers).

One module per group of commands; importing them registers the commands on `app`.
Exit codes (fulfilment/cli/common.py, `fulfil --help`): 0 done, 1 not found or nothing to do,
2 usage or configuration error, 3 a dependency unreachable (or a health check failed),
4 refused by the purchase's state.
"""

# Registration order is the order of `fulfil --help`: the purchase commands first.
from fulfilment.cli import purchases  # noqa: F401  (registers the commands)

# isort: split
from fulfilment.cli import console, dlq, operator, queues, service, tickets  # noqa: F401
from fulfilment.cli.common import REPO_ROOT, app
from fulfilment.cli.service import request_schema

__all__ = ["REPO_ROOT", "app", "request_schema"]
