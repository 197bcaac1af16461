"""Errors users can act on, and the one skip-handler protocol used by every stage.

A handler is `handler(exc) -> bool`: True means "counted, carry on", False means "stop".
Tests use `reraise` so that nothing is swallowed; real runs use `CountingHandler`.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from typing import Callable

log = logging.getLogger("fc")


class UserError(Exception):
    """A mistake the user can fix (bad path, bad option); the CLI prints it as one line, exit 1."""


class ReadError(Exception):
    """A shard or sample that a reader of shards skips: why (a fcdata.reasons READ_* name), where
    (the shard, and the sample key when there is one) and the underlying error's message."""

    def __init__(self, reason: str, where: str, detail: str = ""):
        super().__init__(f"{where}: {reason}" + (f" ({detail})" if detail else ""))
        self.reason, self.where, self.detail = reason, where, detail


_ADDRESS = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")


def error_detail(exc: BaseException, with_type: bool = True) -> str:
    """An error's message without memory addresses (`<_io.BytesIO object at 0x7f...>` becomes
    `<_io.BytesIO>`): manifests and reports must be functions of the input, byte for byte."""
    message = _ADDRESS.sub(r"<\1>", str(exc))
    return f"{type(exc).__name__}: {message}" if with_type else message


ErrorHandler = Callable[[BaseException], bool]


def reraise(exc: BaseException) -> bool:
    raise exc


class CountingHandler:
    """Counts exceptions by reason (a ReadError's, else the type name) and logs them, at most one
    line per `log_every_s` per reason; `first` keeps the first one's message for error reports."""

    def __init__(self, what: str, log_every_s: float = 10.0):
        self.what = what
        self.log_every_s = log_every_s
        self.counts: Counter[str] = Counter()
        self.first: str = ""
        self._last_logged: dict[str, float] = {}

    def __call__(self, exc: BaseException) -> bool:
        kind = getattr(exc, "reason", None) or type(exc).__name__
        self.counts[kind] += 1
        self.first = self.first or str(exc)
        now = time.monotonic()
        if now - self._last_logged.get(kind, -1e9) >= self.log_every_s:
            self._last_logged[kind] = now
            log.warning("%s: skipped %s (%d so far)", self.what, exc, self.counts[kind])
        return True

    def summary(self) -> str:
        return format_counts(self.counts)


def format_counts(counts: dict[str, int]) -> str:
    """`bad_image 2, truncated_shard 1` (by name), or `none`: skip counts in a summary line."""
    return ", ".join(f"{reason} {count:,}" for reason, count in sorted(counts.items()) if count) or "none"


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived while a command was setting up (before it could save anything to
    resume from). A BaseException, like KeyboardInterrupt, so only cleanup code catches it."""

    def __init__(self, number: int):
        import signal

        self.number, self.name = number, signal.Signals(number).name
        super().__init__(self.name)
