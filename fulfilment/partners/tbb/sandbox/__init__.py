"""A faithful in-memory sandbox of the Ticket Buyback (TBB) Partner API.

Built from ``/work/shared/tbb-contract.md`` and the seed documents, including the endpoints the
contract marks ASSUMED (order read, order lookup by quote, 429 with Retry-After, 5xx with or
without the envelope, partner isolation). It exists so the client and workers can be tested
against realistic behaviour, faults included, without the real API.

Modules (one concept each):

- ``config``      SandboxConfig (start-up, ``from_env``) and RuntimeSettings (admin-patchable)
- ``accounts``    partner accounts and credential checks
- ``catalogue``   seeded events/sections/rows/prices (ids documented there)
- ``inventory``   seat occupancy and consecutive-seat allocation
- ``models``      token/quote/order records and their contract-shaped views
- ``lifecycle``   order status transitions over time and the outcome policy
- ``store``       all mutable state behind one lock; quote and order business rules
- ``discovery``   event search filters
- ``faults``      fault rules, injector and fault responses (incl. drop after commit)
- ``envelope``    success/list/error envelopes
- ``errors``      error codes -> HTTP status
- ``validation``  request parsing -> VALIDATION_ERROR
- ``middleware``  X-Request-ID echo and safe request logging
- ``api`` / ``admin``  route handlers; ``app`` builds the Starlette app; ``server`` runs uvicorn
"""

from .app import create_app
from .config import SandboxConfig
from .server import SandboxServer, run

__all__ = ["SandboxConfig", "SandboxServer", "create_app", "run"]
