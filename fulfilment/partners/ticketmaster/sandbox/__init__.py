"""A faithful in-memory sandbox of the Ticketmaster Partner API (and SecureRender).

Built from ``/work/shared/ticketmaster-contract.md``, seeds 003 (SafeTix) and 004 (FAQ) and the 2017
public reference, NOT from any client of ours. Every choice those leave open is in ``assumed.py``
(and the seeded inventory in ``catalogue.py``), each marked ASSUMED with its reason.

Run it: ``python -m fulfilment.partners.ticketmaster.sandbox --host 127.0.0.1 --port 18090``, or
``run(host, port, config)``; embed it: ``create_app(config, clock=...)``. Default apikey:
``tm-sandbox-apikey`` (``TM_SANDBOX_APIKEYS`` to change).

Modules (one concept each):

- ``assumed``     every open choice: apikey, hold times, quotas, polling, error codes, nonces, shapes
- ``catalogue``   seeded events (ids, timezones, start times), price levels, ticket types, seats
- ``config``      SandboxConfig (start-up, ``from_env``) and RuntimeSettings (admin-patchable), with
                  the unkind settings: one-time nonces, polling URL TTL, hidden unredeemed orders,
                  quiet SafeTix delays, empty barcodes, hold variance, best-available swaps
- ``timeutil``    the adjustable sandbox clock and time formatting
- ``inventory``   seat occupancy and contiguous-block allocation
- ``models``      cart and order records, pricing and their contract-shaped views
- ``safetix``     rotating tokens, order management view, SecureRender per-ticket answers
- ``validation``  request bodies -> typed requests or the documented error
- ``store``       carts, orders, inventory and the purchase rules (expiry, commit, delete...)
- ``polling``     202 polling jobs and their URLs
- ``quota``       per-apikey hourly quotas and the Ratelimit-* headers
- ``niterun``     the 00:00-02:00 event-local maintenance window and its admin override
- ``inflight``    in-flight calls per cart (no concurrent calls on one cart)
- ``faults``      injected latency / 5xx, commit-then-drop and late commits (5xx, processed anyway),
                  and the unkind modes of issue 16: stalled polls (per operation polled), answers
                  sent after the work (``answer_after_*``), 403/404 refusals, 20001 at any hour
- ``late``        commits made now or, after a late-commit fault's 5xx, later (asyncio tasks)
- ``counts``      what the admin API counts
- ``state``       everything one instance owns, behind ONE lock
- ``errors`` / ``responses``  the TM error envelope; outcomes and money rendering
- ``pipeline``    the order of checks every partner call goes through
- ``api`` / ``admin``  route handlers; ``middleware`` safe access log; ``app`` builds the Starlette
  app; ``server`` runs uvicorn; ``__main__`` the command line
"""

from .app import create_app
from .config import SandboxConfig
from .server import run
from .state import SandboxState

__all__ = ["SandboxConfig", "SandboxState", "create_app", "run"]
