"""Pictures to look at rather than read: shard samples with their masks, and box choices."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np

from fcdata.errors import CountingHandler
from fcdata.guard import check_shards, decoded, read_raw, require_any
from fcdata.reader import RegionSample, decode_sample

PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
)
_LINE = 12  # px per caption line with PIL's default font


def render_sample(sample: RegionSample, max_regions: int = 8, scale: int = 2):
    """The image with its first regions' masks tinted in colour, and a legend of their phrases."""
    from PIL import Image, ImageDraw

    image = sample.image.astype(np.float32)
    count = min(max_regions, len(sample.phrases))
    for k in range(count):
        weight = sample.masks[k].astype(np.float32)[..., None] / 255 * 0.45
        image = image * (1 - weight) + np.array(PALETTE[k % len(PALETTE)], np.float32) * weight
    picture = Image.fromarray(image.clip(0, 255).astype(np.uint8))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(picture)
    for k, box in enumerate(sample.boxes[:count]):
        draw.rectangle(tuple((box * scale).tolist()), outline=PALETTE[k % len(PALETTE)], width=2)
    legend = [(PALETTE[k % len(PALETTE)], sample.phrases[k]) for k in range(count)]
    title = f"image {sample.meta['image_id']}: {len(sample.phrases)} regions"
    return _with_caption(picture, [((0, 0, 0), title)] + legend)


def render_shard_samples(paths: list[str], count: int, max_regions: int, handler: CountingHandler) -> list:
    """Pictures (render_sample) of the first `count` readable samples of the shards; unreadable
    shards and samples are skipped and counted in `handler`; none readable is a UserError."""
    check_shards(paths)
    render = functools.partial(_render_raw, max_regions=max_regions)
    pictures = list(itertools.islice(decoded(read_raw(paths, handler), render, handler), count))
    require_any(len(pictures), handler, "shards")
    return pictures


def _render_raw(sample: dict, max_regions: int):
    return render_sample(decode_sample(sample), max_regions)


def render_box_choice(image: np.ndarray, boxes: np.ndarray, phrase: str, chosen: int, correct: int, scale: int = 3):
    """The model's view of an image: every candidate box thin grey, the right one green, the
    chosen one red (green and thick if right), with the phrase above."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(picture)
    for box in boxes:
        draw.rectangle(tuple((box * scale).tolist()), outline=(170, 170, 170), width=1)
    draw.rectangle(tuple((boxes[correct] * scale).tolist()), outline=(40, 200, 60), width=3)
    if chosen != correct:
        draw.rectangle(tuple((boxes[chosen] * scale).tolist()), outline=(230, 30, 30), width=3)
    verdict = "right" if chosen == correct else "wrong (red); right box in green"
    return _with_caption(picture, [((0, 0, 0), f'"{phrase}"'), ((80, 80, 80), f"choice: {verdict}")])


def _with_caption(picture, lines: list[tuple[tuple[int, int, int], str]]):
    from PIL import Image, ImageDraw

    width = max(picture.width, 8 + 6 * max(len(text) for _, text in lines))
    canvas = Image.new("RGB", (width, picture.height + _LINE * len(lines) + 8), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, (colour, text) in enumerate(lines):
        draw.text((4, picture.height + 4 + row * _LINE), text, fill=colour)
    return canvas


def save_grid(pictures: list, path: Path, columns: int = 4) -> Path:
    """Tile pictures into one PNG (written to a temporary name, then renamed)."""
    from PIL import Image

    import os

    cell_w = max(p.width for p in pictures)
    cell_h = max(p.height for p in pictures)
    rows = (len(pictures) + columns - 1) // columns
    grid = Image.new("RGB", (cell_w * min(columns, len(pictures)), cell_h * rows), (255, 255, 255))
    for index, picture in enumerate(pictures):
        grid.paste(picture, ((index % columns) * cell_w, (index // columns) * cell_h))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    grid.save(temporary, "PNG")
    os.replace(temporary, path)
    return path
