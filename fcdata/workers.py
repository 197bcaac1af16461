"""What every worker process of a process pool sets up first (the pool's initializer).

- It exits as soon as its parent is gone (kill -9 of the command), instead of finishing its task
  with nobody to hand it to: a thread polls the parent id twice a second.
- SIGINT and SIGTERM end it at once and quietly: Ctrl-C reaches the whole process group, and the
  parent reports the interruption once (without one traceback per worker). What it was writing
  is a temporary, removed by the next run. Workers are started under `sigint_ignored()`, so that
  a Ctrl-C while one is still importing its modules does not print a traceback either.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator

POLL_SECONDS = 0.5


def init_worker(parent: int) -> None:
    """`parent`: the process id of the pool's owner, taken there (by the time a spawned worker
    has imported its modules, the parent may already be gone and getppid() names its adopter)."""
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, _exit_now)
    threading.Thread(target=_watch_parent, args=(parent,), name="exit-with-parent", daemon=True).start()


def _exit_now(number, frame) -> None:
    os._exit(128 + number)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    os._exit(1)


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """Start processes inside this: they begin life ignoring SIGINT (a disposition kept across
    exec, and which Python then leaves alone) until init_worker sets their handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
