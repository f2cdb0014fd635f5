"""The chaos run: purchases at volume under kills, server restarts and partner faults.

`make chaos` runs the full size (1,000 purchases); `tests/e2e/test_chaos.py` a smaller one
inside `make test`.  See `run.py` for what happens and `checks.py` for what is verified.
"""
