"""The plumbing both partner sandboxes share (TBB: ``partners/tbb/sandbox``, Ticketmaster:
``partners/ticketmaster/sandbox``); each sandbox keeps only its partner's behaviour.

- ``clock``: UTC instants truncated to milliseconds, rendering and parsing, an adjustable clock;
- ``faults``: the fault book's bookkeeping (rules per endpoint with a ``*`` fallback, seeded
  randomness, counters), rule validation helpers and the dropped connection;
- ``trickle``: the "trickle" fault, an answer sent slowly a piece at a time;
- ``admin``: the admin API's loopback guard, JSON bodies and errors;
- ``middleware``: the safe access log line per request;
- ``config``: runtime settings a PATCH may change, overrides;
- ``server``: serving an app with uvicorn, blocking or in a background thread.

It imports nothing from either sandbox, nor from the rest of ``fulfilment``.
"""
