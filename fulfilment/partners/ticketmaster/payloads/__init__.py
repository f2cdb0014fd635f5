"""What goes to Ticketmaster and what comes back, as typed values.

Requests are built from small frozen dataclasses (`ReserveRequest`, `Payment`, `Device`, ...);
answers are parsed into frozen dataclasses.  Parsers take JSON decoded with
`parse_float=Decimal`, so every amount is the exact Decimal TM sent (never a float).  A body
without the documented shape raises `MalformedResponse` (never a KeyError, never a half-filled
success); what that means for each call is the client's business (api.py).

Secrets (ticket tokens, the order token and the URLs that embed it, card data, captcha
solutions) are `pydantic.SecretStr` fields with `repr=False`: printing or logging a value never
shows them; `.get_secret_value()` does, on purpose.  Buyer PII (names, email, phone, address) is
kept out of reprs too.

calls.py (operations, polling, request values and their bodies), answers.py (answer values),
parsers.py (answers from JSON) over reading.py (this package's JSON-reading helpers); every name is
importable from here.
"""

from __future__ import annotations

from fulfilment.partners.ticketmaster.errors import MalformedResponse as MalformedResponse

# Every name of the package's modules, importable from here (each module's __all__).
from fulfilment.partners.ticketmaster.payloads.answers import *  # noqa: F403
from fulfilment.partners.ticketmaster.payloads.calls import *  # noqa: F403
from fulfilment.partners.ticketmaster.payloads.parsers import *  # noqa: F403
