"""Serving the sandbox with uvicorn (``run``), for the CLI and ``python -m`` (the plumbing is
``sandbox_kit.server``)."""

from __future__ import annotations

from fulfilment.partners.sandbox_kit.server import serve

from .app import create_app
from .config import SandboxConfig

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 18090


def run(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, config: SandboxConfig | None = None,
        log_level: str = "info") -> None:
    """Serve the sandbox until interrupted (blocking)."""
    serve(lambda: create_app(config or SandboxConfig.from_env()), host, port, log_level)
