"""Where commands write: checks made before any work starts, so a wrong or read-only output path
is a one-line error in a moment instead of a traceback after minutes; and the removal of
temporaries that killed processes left behind.

Temporaries follow one naming rule: `.NAME.tmp-PID-...` or `NAME.tmpPID` (the writer's process id),
so a later run can tell a dead writer's leftovers from a live one's files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from fcdata.errors import UserError


def check_output_dir(path: Path, what: str = "--out") -> Path:
    """Fail unless `path` is (or can be created as) a folder this process can write in. Creates it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test.tmp{os.getpid()}-{uuid.uuid4().hex[:6]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"{what} {path}: cannot write there ({describe_os_error(exc)})") from None
    return path


def check_output_file(path: Path, what: str = "--out") -> Path:
    """Fail unless `path` can be written as a file (its folder is created if missing)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file name (e.g. {path / 'samples.png'})")
    check_output_dir(path.parent, f"{what} {path}: its folder")
    return path


def describe_os_error(exc: OSError) -> str:
    """`read-only file system`, `permission denied`...: the reason, without Python's wrapping."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    return reason[:1].lower() + reason[1:]


_TEMPORARY = re.compile(r"\.(?:tmp|old)-?(\d+)")


def remove_stale_temporaries(folder: Path, pattern: str = "*.tmp*") -> list[Path]:
    """Delete the temporaries under `folder` (glob `pattern`) whose writing process is gone."""
    removed = []
    for path in Path(folder).glob(pattern):
        match = _TEMPORARY.search(path.name)
        if match is None or _alive(int(match.group(1))):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def write_text_atomically(path: Path, text: str) -> Path:
    """Write `text` to a temporary name beside `path`, then rename it over `path`."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def write_directory_atomically(out_dir: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `out_dir`; on success it replaces `out_dir` whole,
    on any exception it is removed. Readers never see a half-written `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out_dir.exists():
        # A directory cannot be renamed over a non-empty one: move the old one aside first.
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
