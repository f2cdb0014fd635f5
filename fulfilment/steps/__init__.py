"""The service layer: one module per pipeline step, each a plain function.

A step takes a purchase id, claims the purchase, talks to the partner outside any
transaction, records the outcome through `state_machine.transition`, and returns
the name of the next step to nudge (or None).  Actors in `workers/` are thin
wrappers around these functions; tests drive them directly too.
"""
