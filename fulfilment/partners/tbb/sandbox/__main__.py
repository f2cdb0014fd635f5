"""``python -m fulfilment.partners.tbb.sandbox --host 127.0.0.1 --port 18080``

Configuration comes from ``SANDBOX_*`` environment variables (see ``config.py``); the flags here
only override what they name.
"""

from __future__ import annotations

import argparse

from .config import SandboxConfig
from .server import DEFAULT_HOST, DEFAULT_PORT, run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fulfilment.partners.tbb.sandbox", description="TBB Partner API sandbox")
    parser.add_argument("--host", default=DEFAULT_HOST, help="bind address (default: loopback)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--seats-per-row", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("seats_per_row", args.seats_per_row), ("seed", args.seed)) if v is not None}
    run(args.host, args.port, SandboxConfig.from_env(**overrides), log_level=args.log_level)


if __name__ == "__main__":
    main()
