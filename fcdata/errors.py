"""Errors users can act on, and the one skip-handler protocol used by every stage.

A handler is `handler(exc) -> bool`: True means "counted, carry on", False means "stop".
Tests use `reraise` so that nothing is swallowed; real runs use `CountingHandler`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Callable

log = logging.getLogger("fc")


class UserError(Exception):
    """A mistake the user can fix (bad path, bad option); the CLI prints it as one line, exit 1."""


ErrorHandler = Callable[[BaseException], bool]


def reraise(exc: BaseException) -> bool:
    raise exc


class CountingHandler:
    """Counts exceptions by type and logs them, at most one line per `log_every_s` per type."""

    def __init__(self, what: str, log_every_s: float = 10.0):
        self.what = what
        self.log_every_s = log_every_s
        self.counts: Counter[str] = Counter()
        self._last_logged: dict[str, float] = {}

    def __call__(self, exc: BaseException) -> bool:
        kind = type(exc).__name__
        self.counts[kind] += 1
        now = time.monotonic()
        if now - self._last_logged.get(kind, -1e9) >= self.log_every_s:
            self._last_logged[kind] = now
            log.warning("%s: skipped after %s: %s (%d so far)", self.what, kind, exc, self.counts[kind])
        return True
