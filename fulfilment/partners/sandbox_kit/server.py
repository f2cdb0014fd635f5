"""Serving a sandbox app with uvicorn: ``serve()`` for the CLI, ``BackgroundServer`` for in-process tests.

Single process, single event loop: all state is in memory, so more workers would mean several
disconnected sandboxes. Bind to loopback (the admin APIs refuse other peers anyway). uvicorn's own
access log is off: its line carries the query string (Ticketmaster's apikey); ``middleware`` logs
a safe line instead.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette

from .faults import ConnectionDropped


class _HideDeliberateDrops(logging.Filter):
    """uvicorn logs "Exception in ASGI application" with a traceback for our deliberate drops."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped)


def install_log_filter() -> None:
    target = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDeliberateDrops) for f in target.filters):
        target.addFilter(_HideDeliberateDrops())


def uvicorn_config(app: Starlette, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, workers=1, lifespan="off", log_level=log_level,
                          access_log=False)


def serve(create_app: Callable[[], Starlette], host: str, port: int, log_level: str = "info") -> None:
    """Serve the app ``create_app()`` builds until interrupted (blocking)."""
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    install_log_filter()
    app = create_app()
    uvicorn.Server(uvicorn_config(app, host, port, log_level)).run()


class BackgroundServer:
    """A real uvicorn server for ``app`` on a free loopback port (``port=0``), in a background thread."""

    def __init__(self, app: Starlette, host: str, port: int = 0, log_level: str = "warning",
                 name: str = "sandbox") -> None:
        self.app = app
        self._host = host
        self._port = port
        self._log_level = log_level
        self._name = name
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int = 0

    @property
    def state(self) -> Any:
        return self.app.state.sandbox

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self, timeout: float = 10.0) -> Self:
        install_log_filter()
        # Bind ourselves so port=0 works and the port is known before the thread starts.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn_config(self.app, self._host, self.port, self._log_level))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"{self._name}-{self.port}", daemon=True)
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
