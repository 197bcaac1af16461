"""Pictures to look at rather than read: shard samples with their masks, and box choices."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np

from fcdata.errors import CountingHandler
from fcdata.guard import check_shards, decoded, read_raw, require_any
from fcdata.outputs import atomic_output
from fcdata.reader import RegionSample, decode_sample
from fcdata.relations import DEFAULT_WEIGHTS, relation_alpha

PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
)
# Caption letters per unit of the picture's scale: one size for every picture of a grid (small
# sources included). A grid of 4 samples at scale 2 is ~3000 px wide and seen at about half size
# on a screen, where 14 px per unit gives ~14 px letters.
_FONT_PX_PER_SCALE = 14
_MIN_CAPTION_EMS = 14  # a narrow picture's caption is at least this many letter heights wide


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
    return _with_caption(picture, scale, [((0, 0, 0), title)], legend)


def render_relation(sample: RegionSample, index: int = 0, weights: tuple[float, float] = DEFAULT_WEIGHTS, scale: int = 2):
    """A relation view as the model sees it: the image dimmed to black where the graded alpha
    is 0, half-bright on the object (at weight 0.5), full on the subject; boxes and phrase below."""
    from PIL import Image, ImageDraw

    relations = sample.meta["relations"]
    subject, obj = relations["subject_box"][index], relations["object_box"][index]
    alpha = relation_alpha(subject, obj, weights, shape=sample.image.shape[:2])
    image = sample.image.astype(np.float32) * (0.15 + 0.85 * alpha[..., None])  # a trace of the rest stays visible
    picture = Image.fromarray(image.clip(0, 255).astype(np.uint8))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(picture)
    colours = (PALETTE[0], PALETTE[3])
    for colour, box in zip(colours, (subject, obj)):
        draw.rectangle(tuple(v * scale for v in box), outline=colour, width=2)
    legend = [
        (colours[0], f"subject {relations['subject_name'][index]}: alpha {weights[0]:g}"),
        (colours[1], f"object {relations['object_name'][index]}: alpha {weights[1]:g}"),
    ]
    return _with_caption(picture, scale, [((0, 0, 0), f'"{relations["phrase"][index]}"')], legend)


def render_shard_samples(paths: list[str], count: int, max_regions: int, handler: CountingHandler, relations: bool = False) -> list:
    """Pictures (render_sample, or render_relation of each sample's first relation) of the first
    `count` readable samples of the shards (with relations, if asked); unreadable shards and
    samples are skipped and counted in `handler`; none readable is a UserError."""
    check_shards(paths)
    render = functools.partial(_render_raw, max_regions=max_regions, relations=relations)
    pictures = (p for p in decoded(read_raw(paths, handler), render, handler) if p is not None)
    pictures = list(itertools.islice(pictures, count))
    require_any(len(pictures), handler, "shards with relations" if relations else "shards")
    return pictures


def _render_raw(sample: dict, max_regions: int, relations: bool):
    decoded_sample = decode_sample(sample)
    if not relations:
        return render_sample(decoded_sample, max_regions)
    if not decoded_sample.meta.get("relations", {}).get("phrase"):
        return None  # a sample without relations: nothing to draw
    return render_relation(decoded_sample)


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
    return _with_caption(picture, scale, [((0, 0, 0), f'"{phrase}"'), ((80, 80, 80), f"choice: {verdict}")])


def render_labelled(image: np.ndarray, boxes: list[tuple[tuple[int, int, int], np.ndarray]], lines: list[tuple[tuple[int, int, int], str]], max_side: int = 320):
    """The image scaled to `max_side` on its long side, boxes (colour, x0 y0 x1 y1 in image pixels) drawn on it,
    caption lines (colour, text) below: a benchmark's example at a glance."""
    from PIL import Image, ImageDraw

    scale = max_side / max(image.shape[:2])
    picture = Image.fromarray(image).resize((max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(picture)
    for colour, box in boxes:
        draw.rectangle(tuple((np.asarray(box, np.float64) * scale).tolist()), outline=colour, width=2)
    return _with_caption(picture, 1, lines)  # 320 px examples: captions at the unscaled font size


Colour = tuple[int, int, int]


def caption_font(scale: int):
    """Pillow's embedded TrueType face (the same on every machine, no system fonts needed) at the
    size for pictures drawn at `scale` times their stored size."""
    from PIL import ImageFont

    return ImageFont.load_default(size=_FONT_PX_PER_SCALE * scale)


def _wrap(text: str, font, width: float) -> list[str]:
    """Words of `text` in lines no wider than `width` px (a longer word gets a line of its own)."""
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if line and font.getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + [line] if line or not lines else lines


def _with_caption(picture, scale: int, lines: list[tuple[Colour, str]], legend: list[tuple[Colour, str]] = ()):
    """`picture` above its caption: `lines` in their text colour, then `legend` entries in black,
    each after a swatch of its colour (light palette colours are unreadable as text on white)."""
    from PIL import Image, ImageDraw

    font = caption_font(scale)
    size = font.size
    width = max(picture.width, _MIN_CAPTION_EMS * size)
    margin = size // 3
    indent = size + 2 * margin  # legend text starts after its swatch
    rows: list[tuple[Colour | None, Colour, str, int]] = []  # swatch colour, text colour, text, x
    for colour, text in lines:
        rows += [(None, colour, part, margin) for part in _wrap(text, font, width - 2 * margin)]
    for colour, text in legend:
        parts = _wrap(text, font, width - indent - margin)
        rows += [(colour if n == 0 else None, (0, 0, 0), part, indent) for n, part in enumerate(parts)]
    line_height = round(size * 1.25)
    canvas = Image.new("RGB", (width, picture.height + line_height * len(rows) + 2 * margin), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, (swatch, colour, text, x) in enumerate(rows):
        top = picture.height + margin + row * line_height
        if swatch is not None:
            box = (margin, top + size // 8, margin + size, top + size // 8 + size)
            draw.rectangle(box, fill=swatch, outline=(0, 0, 0))
        draw.text((x, top), text, fill=colour, font=font)
    return canvas


def save_grid(pictures: list, path: Path, columns: int = 4) -> Path:
    """Tile pictures into one PNG (written to a temporary name, then renamed)."""
    from PIL import Image

    cell_w = max(p.width for p in pictures)
    cell_h = max(p.height for p in pictures)
    rows = (len(pictures) + columns - 1) // columns
    grid = Image.new("RGB", (cell_w * min(columns, len(pictures)), cell_h * rows), (255, 255, 255))
    for index, picture in enumerate(pictures):
        grid.paste(picture, ((index % columns) * cell_w, (index // columns) * cell_h))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary:
        grid.save(temporary, "PNG")
    return path
