"""Reading shards through bad data: what every reader of shards (train, eval, show, bench, the
tiny model's pretraining) does with a broken shard or sample, and how it knows when to give up.

- `read_raw(paths, handler)`: shard paths -> raw samples; an unreadable, empty or truncated shard
  is handed to the handler as a ReadError (the samples before a truncation are kept).
- `decoded(samples, decode, handler)`: raw samples -> decode(sample); a sample whose decode raises
  is handed to the handler as a ReadError, classified by `read_reason`.
- `check_shards(paths)`: before any work, fail if not one shard even starts like a tar.
- `StreamHealth`: an endless stream (training draws shards with replacement) never ends by
  itself; it gives up once every shard has been read through and every sample read has failed.

Counts are by reason (fcdata.reasons READ_*), so each command can print them in its summary.
"""

from __future__ import annotations

import json
from typing import Callable, Iterable, Iterator, TypeVar

from fcdata import keys, reasons, tarformat
from fcdata.errors import ErrorHandler, ReadError, UserError, error_detail

T = TypeVar("T")


def read_reason(exc: BaseException) -> str:
    """The READ_* reason for an error raised while decoding one sample."""
    if isinstance(exc, ReadError):
        return exc.reason
    if isinstance(exc, KeyError):
        return reasons.READ_MISSING_MEMBER
    if isinstance(exc, (UnicodeDecodeError, json.JSONDecodeError)):
        return reasons.READ_BAD_METADATA
    if isinstance(exc, (OSError, SyntaxError, EOFError)) or type(exc).__module__.startswith("PIL"):
        return reasons.READ_BAD_IMAGE  # PIL's errors: UnidentifiedImageError, truncated data, bombs
    return reasons.READ_BAD_SAMPLE


def where(sample: dict) -> str:
    return f"{sample.get(keys.URL, '?')}: sample {sample.get(keys.KEY, '?')}"


def read_raw(paths: Iterable[str], handler: ErrorHandler, health: "StreamHealth | None" = None) -> Iterator[dict]:
    """shard paths -> raw samples, each with its shard under keys.URL."""
    for path in paths:
        count = 0
        try:
            for sample in tarformat.iter_shard(path):
                sample[keys.URL] = path
                count += 1
                if health is not None:
                    health.read(sample)
                yield sample
            if count == 0:
                empty = ReadError(reasons.READ_EMPTY_SHARD, path, "no samples")
                if not handler(empty):
                    raise empty
        except ReadError as exc:
            if not handler(exc):
                raise
        if health is not None:
            health.shard_done(path)


def decoded(
    samples: Iterable[dict], decode: Callable[[dict], T], handler: ErrorHandler, health: "StreamHealth | None" = None
) -> Iterator[T]:
    """raw samples -> decode(sample), leaving out (and handing to `handler`) those that fail."""
    for sample in samples:
        try:
            value = decode(sample)
        except Exception as exc:  # noqa: BLE001 - one bad sample must not end the reader
            if not handler(ReadError(read_reason(exc), where(sample), error_detail(exc))):
                raise
            if health is not None:
                health.failed(sample)
            continue
        if health is not None:
            health.succeeded()
        yield value


def header_problem(path: str) -> str:
    """Why `path` cannot be a shard, judged from its first 512 bytes ("" if it may be one)."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(512)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not head:
        return "is empty (0 bytes)"
    if head == bytes(len(head)):
        return "holds no samples (an empty tar)"
    try:
        checksum = int(head[148:156].rstrip(b"\0 ") or b"-1", 8)
    except ValueError:
        checksum = -1
    if len(head) < 512 or checksum != sum(head[:148]) + 256 + sum(head[156:]):
        return "is not a tar file"
    return ""


def check_shards(paths: list[str], what: str = "shards") -> dict[str, str]:
    """{path: problem} for the shards that cannot hold a sample; a UserError if that is all of them
    (so a command fails in a moment instead of after minutes of set-up, or never)."""
    problems = {path: problem for path in paths if (problem := header_problem(path))}
    if problems and len(problems) == len(paths):
        first = next(iter(problems))
        more = f" (and the other {len(paths) - 1} {what} too)" if len(paths) > 1 else ""
        raise UserError(f"no usable {what}: {first} {problems[first]}{more}")
    return problems


def require_any(count: int, handler, what: str) -> None:
    """A UserError when a reader got nothing at all out of its shards, with the reasons why."""
    if count == 0:
        detail = f"; skipped {handler.summary()}, first: {handler.first}" if handler.counts else ""
        raise UserError(f"no readable sample in the {what}{detail}")


class StreamHealth:
    """Whether an endless stream over `shards` can still yield a sample. It cannot once every
    shard has been read through at least once and every distinct sample read so far has failed
    (the stream would then cycle through failures forever). Until the first success it remembers
    the failed samples' keys; after it, nothing."""

    def __init__(self, shards: Iterable[str], handler):
        self.unread = set(shards)
        self.handler = handler
        self.useful = False
        self.seen: set[tuple[str, str]] = set()
        self.failures: set[tuple[str, str]] = set()

    def read(self, sample: dict) -> None:
        if not self.useful:
            self.seen.add((sample[keys.URL], sample[keys.KEY]))

    def failed(self, sample: dict) -> None:
        if not self.useful:
            self.failures.add((sample[keys.URL], sample[keys.KEY]))
            self._check()

    def succeeded(self) -> None:
        if not self.useful:
            self.useful = True
            self.seen.clear(), self.failures.clear()

    def shard_done(self, path: str) -> None:
        self.unread.discard(path)
        if not self.useful:
            self._check()

    def _check(self) -> None:
        if not self.unread and len(self.failures) == len(self.seen):
            raise UserError(
                f"no usable sample in the shards: every shard was read and nothing could be used "
                f"(skipped {self.handler.summary()}; first: {self.handler.first})"
            )
