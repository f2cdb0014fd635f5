"""Serving the sandbox with uvicorn: ``run()`` for the CLI, ``SandboxServer`` for in-process tests.

Single process, single event loop: all state is in memory, so more workers would mean several
disconnected sandboxes. Binds to loopback by default; the admin API refuses other peers anyway.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType

import uvicorn
from starlette.applications import Starlette

from .app import create_app
from .config import SandboxConfig
from .faults import ConnectionDropped
from .state import SandboxState

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 18080


class _HideDeliberateDrops(logging.Filter):
    """uvicorn logs "Exception in ASGI application" with a traceback for our deliberate drops."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped)


def _install_log_filter() -> None:
    target = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDeliberateDrops) for f in target.filters):
        target.addFilter(_HideDeliberateDrops())


def _uvicorn_config(app: Starlette, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        workers=1,
        lifespan="off",
        log_level=log_level,
        # Our middleware logs method/path/status/request id; uvicorn's access log would add query strings.
        access_log=False,
    )


def run(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, config: SandboxConfig | None = None,
        log_level: str = "info") -> None:
    """Serve the sandbox until interrupted (blocking)."""
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    _install_log_filter()
    app = create_app(config or SandboxConfig())
    uvicorn.Server(_uvicorn_config(app, host, port, log_level)).run()


class SandboxServer:
    """A real uvicorn server on a free loopback port, in a background thread.

    >>> with SandboxServer(SandboxConfig()) as server:
    ...     httpx.get(server.base_url + "/healthz")
    """

    def __init__(self, config: SandboxConfig | None = None, host: str = DEFAULT_HOST, port: int = 0,
                 log_level: str = "warning") -> None:
        self.app = create_app(config or SandboxConfig())
        self._host = host
        self._port = port
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int = 0

    @property
    def state(self) -> SandboxState:
        return self.app.state.sandbox

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self, timeout: float = 10.0) -> SandboxServer:
        _install_log_filter()
        # Bind ourselves so port=0 works and the port is known before the thread starts.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(_uvicorn_config(self.app, self._host, self.port, self._log_level))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"tbb-sandbox-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("sandbox server failed to start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = None
        self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
