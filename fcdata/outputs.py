"""Where commands write, and how: checks made before any work starts, so a wrong or read-only
output path is a one-line error in a moment instead of a traceback after minutes; writes that
never leave half an output (`atomic_output` for a file, `write_directory_atomically` for a folder:
a temporary name, then a rename); and the removal of temporaries that killed processes left behind.

Temporaries follow one naming rule: `.NAME.tmp-PID-...` or `.NAME.tmpPID` (the writer's process
id), so a later run can tell a dead writer's leftovers from a live one's files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

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


@contextlib.contextmanager
def atomic_output(path: Path, durable: bool = False) -> Iterator[Path]:
    """Yield the temporary name to write `path` under (`.NAME.tmpPID`, beside it); when the block
    ends it is renamed over `path`, and if the block raises it is deleted, so a reader sees the old
    file or the new one, never half of one. `durable` fsyncs the file before the rename and the
    folder after it, for outputs that must survive a crash of the machine (shards, checkpoints)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield temporary
        if durable:
            fsync_path(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if durable:
        fsync_path(path.parent)


def open_atomically(stack: contextlib.ExitStack, path: Path) -> IO[str]:
    """A text stream that writes `path` atomically once `stack` closes without an exception (the
    stream closes first, then it is renamed); deleted if it closes with one."""
    return stack.enter_context(open(stack.enter_context(atomic_output(path)), "w", encoding="utf-8"))


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries (the names renamed into it), to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_bytes_atomically(path: Path, data: bytes) -> Path:
    with atomic_output(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_text_atomically(path: Path, text: str) -> Path:
    """`text` at `path`, written atomically; its folder is created if missing."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def write_json_atomically(path: Path, data: dict, sort_keys: bool = False) -> Path:
    """`data` as indented JSON (and a final newline) at `path`, written atomically."""
    return write_text_atomically(path, json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")


@contextlib.contextmanager
def write_directory_atomically(out_dir: Path, durable: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `out_dir`; on success it replaces `out_dir` whole,
    on any exception it is removed. Readers never see a half-written `out_dir`. `durable` fsyncs
    its files and itself before the rename and the parent folder after it."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        if durable:
            for path in [*tmp.iterdir(), tmp]:
                if path == tmp or not path.is_dir():
                    fsync_path(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out_dir.exists():
        # A directory cannot be renamed over a non-empty one: move the old one aside first.
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if durable:
        fsync_path(out_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
