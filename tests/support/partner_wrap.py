"""The real partner client with one of its operations wrapped, for tests that put the world between a
call and its answer (a freeze, a late answer, an altered answer, a noted argument)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


class OneCall:
    """Every attribute of `real`, but calls of `operation` go through `around(call, *args, **kwargs)`,
    where `call` is the real method."""

    def __init__(self, real: Any, operation: str, around: Callable[..., Any]) -> None:
        self.name = real.name
        self._real, self._operation, self._around = real, operation, around

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._real, name)
        return functools.partial(self._around, method) if name == self._operation else method
