"""What every benchmark report shares: the model description, options checks, the progress
protocol (atomic JSON writes are fcdata.outputs.write_json_atomically)."""

from __future__ import annotations

from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, TypeVar

from fcdata.errors import UserError


class EvalProgress(Protocol):
    """Implemented by the CLI's progress bar; the library only calls these."""

    def start(self, total: int, what: str) -> None: ...
    def advance(self, count: int) -> None: ...


class NoProgress:
    def start(self, total: int, what: str) -> None:
        pass

    def advance(self, count: int) -> None:
        pass


@dataclass
class Tally:
    """What a benchmark's loop keeps beside its scores: counts, the first `limit` examples (for
    the pictures) and their images."""

    counts: Counter
    limit: int
    examples: list[dict] = field(default_factory=list)
    example_images: dict = field(default_factory=dict)  # example key -> H x W x 3 uint8

    def example(self, record: dict, key: str, pixels) -> None:
        if len(self.examples) < self.limit:
            self.examples.append(record)
            self.example_images[key] = pixels

    def finish(self, skips: Counter, evaluated: str, nothing: str) -> None:
        """Merge the loader's skips into the counts; none `evaluated` (a count's name) is the
        UserError `nothing`."""
        self.counts.update(skips)
        if not self.counts[evaluated]:
            raise UserError(nothing)


T = TypeVar("T")
R = TypeVar("R")


def prefetched(fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """fn(item) for each item, in order, the next one computed in a background thread while the
    caller works on the current one (image decoding and view building overlap the model)."""
    with ThreadPoolExecutor(1) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > 1:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def load_eval_model(path: Path, device: str = "cpu"):
    """(RGBAClip in eval mode, tokenizer, a note on what its baseline rows mean) from `path`: a
    Focus-CLIP export (fc export, or an Alpha-CLIP checkpoint through fc convert) or a Hugging Face
    CLIP directory (plain CLIP, alpha conv zero)."""
    import torch

    from fctrain.export import METADATA
    from fctrain.model import RGBAClip, load_clip

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--model {path}: no such folder")
    if (path / METADATA).is_file():
        from fctrain.api import FocusClip

        loaded = FocusClip.load(path, device)
        note = f"export {path}: baseline rows run on its own RGB weights with the alpha off (plain CLIP only if it is CLIP)"
        return loaded.model.float().eval(), loaded.tokenizer, note
    if not (path / "config.json").is_file():
        raise UserError(f"--model {path}: neither a Focus-CLIP export ({METADATA}) nor a Hugging Face CLIP folder (config.json)")
    clip, tokenizer = load_clip(path)
    model = RGBAClip(clip).to(torch.device(device)).eval()
    return model, tokenizer, f"plain CLIP {path}: alpha rows equal CLIP (its alpha conv is zero)"
