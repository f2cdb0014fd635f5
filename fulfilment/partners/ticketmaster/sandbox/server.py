"""Serving the sandbox with uvicorn (``run``), for the CLI and ``python -m``.

Single process, single event loop: all state is in memory. Binds to loopback by default; the admin
API refuses other peers anyway.
"""

from __future__ import annotations

import logging

import uvicorn

from .app import create_app
from .config import SandboxConfig
from .faults import ConnectionDropped

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 18090


class _HideDeliberateDrops(logging.Filter):
    """uvicorn logs "Exception in ASGI application" with a traceback for our deliberate drops."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped)


def install_log_filter() -> None:
    target = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDeliberateDrops) for f in target.filters):
        target.addFilter(_HideDeliberateDrops())


def run(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, config: SandboxConfig | None = None,
        log_level: str = "info") -> None:
    """Serve the sandbox until interrupted (blocking)."""
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    install_log_filter()
    app = create_app(config or SandboxConfig.from_env())
    # access_log off: uvicorn's access line carries the query string, i.e. the apikey.
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, workers=1, lifespan="off", log_level=log_level,
                                  access_log=False)).run()
