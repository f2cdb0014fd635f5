"""One hard deadline per partner call, for every partner (design invariant 8: a partner call
never outlives its lease).

httpx's timeouts are per phase and per socket operation: the pool wait, the connect, each write
and each read get their own budget, and the read timeout starts again with every chunk.  A partner
that sends its answer a few bytes at a time, each just inside the read timeout, keeps a call open
for as long as it likes.  The clients (tbb/client.py, ticketmaster/api.py) cut each phase to the
time left when an exchange starts and start no retry that cannot finish in time; this module makes
the call's deadline hard for everything after that:

- the client passes its call's deadline (a ``time.monotonic()`` instant) with every request, in the
  request extension ``DEADLINE``;
- ``DeadlineTransport`` wraps the transport under the client's ``httpx.Client``: it refuses to
  start a request once the deadline has passed (``httpx.ConnectTimeout``: nothing was sent), cuts
  the phase timeouts to the time left, and checks the deadline again before it hands on each chunk
  of the answer: past it, the answer is abandoned with ``CallDeadlineExceeded`` (an
  ``httpx.ReadTimeout``: the request was sent);
- ``DeadlineHTTPTransport`` (httpx's own transport, the default under ``DeadlineTransport``) gives
  every socket operation of a call -- connect, TLS handshake, each write, each read -- at most the
  time left before that call's deadline, so no single read can run past it either, however slowly
  the partner answers.

What a cut means is the client's business, by the kind of call: a connect cut by the deadline sent
nothing (httpx.ConnectTimeout, "not sent"); a cut once the request may have left (a write, the wait
for the answer, a chunk) is a timeout after sending: a transient error for a call that changes
nothing, "outcome unknown" for an order or a commit -- never "not sent".

A request without the extension (``deadline=None``) is passed through unchanged.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

# Request extension carrying the call's deadline, a time.monotonic() instant.
DEADLINE = "fulfilment_deadline"

_CURRENT: contextvars.ContextVar[float | None] = contextvars.ContextVar("partner_call_deadline", default=None)

_PASSED = "the partner call's deadline passed"


class CallDeadlineExceeded(httpx.ReadTimeout):
    """The call's deadline passed while its answer was still arriving: the request was sent."""


def _left(deadline: float) -> float:
    return deadline - time.monotonic()


class DeadlineTransport(httpx.BaseTransport):
    """Enforces the request's ``DEADLINE`` extension on `inner` (default: DeadlineHTTPTransport)."""

    def __init__(self, inner: httpx.BaseTransport | None = None) -> None:
        self._inner = inner if inner is not None else DeadlineHTTPTransport()

    def __repr__(self) -> str:
        return f"DeadlineTransport({self._inner!r})"

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = request.extensions.get(DEADLINE)
        if deadline is None:
            return self._inner.handle_request(request)
        left = _left(deadline)
        if left <= 0:
            raise httpx.ConnectTimeout(f"{_PASSED} before the request was sent", request=request)
        timeouts = dict(request.extensions.get("timeout") or {})
        request.extensions["timeout"] = {phase: left if timeouts.get(phase) is None else min(timeouts[phase], left)
                                         for phase in ("connect", "read", "write", "pool")}
        with _within(deadline, request):
            response = self._inner.handle_request(request)
        response.stream = _DeadlineStream(response.stream, deadline, request)
        return response

    def close(self) -> None:
        self._inner.close()


class _DeadlineStream(httpx.SyncByteStream):
    """The answer's body, chunk by chunk, never past the deadline."""

    def __init__(self, inner: Any, deadline: float, request: httpx.Request) -> None:
        self._inner = inner
        self._deadline = deadline
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        chunks = iter(self._inner)
        while True:
            self._check()
            with _within(self._deadline, self._request):
                chunk = next(chunks, None)
            if chunk is None:
                return
            self._check()
            yield chunk

    def _check(self) -> None:
        if _left(self._deadline) <= 0:
            raise CallDeadlineExceeded(f"{_PASSED} while the answer was arriving", request=self._request)

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


@contextmanager
def _within(deadline: float, request: httpx.Request) -> Iterator[None]:
    """Makes `deadline` the one DeadlineHTTPTransport's sockets obey (in this thread) for a while;
    a write or read they cut at the deadline comes out as CallDeadlineExceeded."""
    token = _CURRENT.set(deadline)
    try:
        yield
    except (httpx.ReadTimeout, httpx.WriteTimeout) as error:
        if isinstance(error, CallDeadlineExceeded) or _left(deadline) > 0:
            raise
        raise CallDeadlineExceeded(f"{_PASSED} after the request was sent", request=request) from None
    finally:
        _CURRENT.reset(token)


class DeadlineHTTPTransport(httpx.HTTPTransport):
    """httpx.HTTPTransport whose connections give each socket operation at most the time left
    before the deadline of the call using them (set by DeadlineTransport).

    httpx does not let a caller choose httpcore's network backend, so this wraps the one its
    connection pool was built with (`_network_backend`, the attribute httpcore's ConnectionPool
    reads when it opens a connection); tests/unit/test_partner_deadline.py fails if that changes.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        pool = self._pool
        pool._network_backend = _DeadlineBackend(pool._network_backend)  # type: ignore[union-attr]


def _capped(timeout: float | None, on_passed: type[Exception]) -> float | None:
    deadline = _CURRENT.get()
    if deadline is None:
        return timeout
    left = _left(deadline)
    if left <= 0:
        raise on_passed(_PASSED)
    return left if timeout is None else min(timeout, left)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _DeadlineSocket(self._inner.connect_tcp(host, port, _capped(timeout, httpcore.ConnectTimeout),
                                                       local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _DeadlineSocket(self._inner.connect_unix_socket(path, _capped(timeout, httpcore.ConnectTimeout),
                                                               socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineSocket(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _capped(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _capped(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineSocket(self._inner.start_tls(ssl_context, server_hostname,
                                                     _capped(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)
