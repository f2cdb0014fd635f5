"""Serving the sandbox with uvicorn: ``run()`` for the CLI, ``SandboxServer`` for in-process tests
(the plumbing is ``sandbox_kit.server``)."""

from __future__ import annotations

from fulfilment.partners.sandbox_kit.server import BackgroundServer, serve

from .app import create_app
from .config import SandboxConfig
from .state import SandboxState

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 18080


def run(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, config: SandboxConfig | None = None,
        log_level: str = "info") -> None:
    """Serve the sandbox until interrupted (blocking)."""
    serve(lambda: create_app(config or SandboxConfig()), host, port, log_level)


class SandboxServer(BackgroundServer):
    """A real uvicorn server on a free loopback port, in a background thread.

    >>> with SandboxServer(SandboxConfig()) as server:
    ...     httpx.get(server.base_url + "/healthz")
    """

    def __init__(self, config: SandboxConfig | None = None, host: str = DEFAULT_HOST, port: int = 0,
                 log_level: str = "warning") -> None:
        super().__init__(create_app(config or SandboxConfig()), host, port, log_level, name="tbb-sandbox")

    @property
    def state(self) -> SandboxState:
        return self.app.state.sandbox
