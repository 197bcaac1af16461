"""Region sampling and the joint geometry of image and masks, one image at a time.

An image yields `regions_per_image` views that share ONE crop and flip of the image and differ
only in their alpha: same-image regions are then negatives that only the alpha can tell apart.
Masks are separable (fcdata.masks), so a crop+resize of a mask is two 1-D resamplings and an outer
product; the 1-D resampling uses the same pixel mapping and triangle filter as PIL's bilinear
resize of the image, so the two stay aligned to a fraction of a pixel.

Real masks (layout runs-v1, fcdata.segmasks) go through the same linear operator as the box
profiles: resampling along y then x with the same triangle weights (PIL's bilinear, antialiased
when shrinking), alpha = Wy @ mask @ Wx^T, so a box-shaped real mask gives the box profile's alpha
and both follow the image exactly. Area-weighted rather than nearest, because nearest would shift
edges by up to half a source pixel against the image and drop thin parts when shrinking; the
graded edge is what the image's own resampling does to the object's outline.

Two views of a sample, two functions (timm keeps its train and eval transforms apart the same way):
- `train_views`: a random crop (area and aspect drawn from `crop_scale` / `crop_ratio`) in which
  every chosen region keeps at least `min_visible` of its area (of its mask's pixels, for a real
  mask) (else another crop is drawn, and after 10 draws the whole image is used), resized to
  size x size, then a horizontal flip with probability 1/2 that also swaps the words "left" and
  "right" in the phrases; every choice comes from the caller's RNG.
- `eval_view`: the letterbox of fcdata.transforms (pad to square, resize), the one inference uses;
  all regions or a chosen subset, box and real-mask alphas alongside; no randomness. fc eval, the
  loader's exactly-once evaluation stream and the validation loss all see this view.

Whole-image views: with probability `full_image_ratio` one of an image's views gets an all-ones
alpha and a whole-image caption. Visual Genome has no image captions, so the phrase of the largest
region is used when that region covers at least `full_image_min_cover` of the image; otherwise the
view stays a region view.
"""

from __future__ import annotations

import io
import math
import random
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import orjson
from numba import njit

from fcdata import jpeg, keys, masks, relation_views, segmasks
from fcdata.options import LoaderOptions
from fcdata.relation_views import RelationNegatives, SampleRelations
from fcdata.transforms import letterbox, letterbox_boxes, letterbox_placement

_SIDE_WORDS = re.compile(r"\b(left|right|Left|Right|LEFT|RIGHT)\b")
_SWAPPED = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "LEFT": "RIGHT", "RIGHT": "LEFT"}


def mirror_phrase(phrase: str) -> str:
    """The phrase for the mirrored image: left and right swap places."""
    return _SIDE_WORDS.sub(lambda m: _SWAPPED[m.group(0)], phrase)


@njit(cache=True, nogil=True)
def resample_profile(profile: np.ndarray, start: float, span: float, size: int) -> np.ndarray:
    """Resample the 1-D uint8 `profile` over [start, start + span) to `size` samples.

    Output pixel i has its centre at start + (i + 0.5) * span / size in input coordinates and is a
    triangle-filter average over a support of max(1, span / size) input pixels each side (PIL's
    bilinear resize, antialiased when shrinking). Input beyond the profile counts as zero.
    """
    scale = span / size
    support = max(1.0, scale)
    out = np.zeros(size, np.float32)
    length = profile.shape[0]
    for i in range(size):
        centre = start + (i + 0.5) * scale
        first = max(int(np.floor(centre - support)), 0)
        last = min(int(np.ceil(centre + support)), length)
        total = 0.0
        weights = 0.0
        for j in range(int(np.floor(centre - support)), int(np.ceil(centre + support))):
            weight = 1.0 - abs((j + 0.5 - centre) / support)
            if weight <= 0.0:
                continue
            weights += weight
            if first <= j < last:
                total += weight * profile[j]
        out[i] = total / weights if weights > 0.0 else 0.0
    return out


@njit(cache=True, nogil=True)
def resample_weights(start: float, span: float, size: int, first: int, stop: int) -> np.ndarray:
    """The matrix (size x (stop - first), float32) of `resample_profile` over input pixels
    first..stop-1: weights @ profile[first:stop] equals resample_profile(profile, ...) for a
    profile that is zero outside them."""
    scale = span / size
    support = max(1.0, scale)
    out = np.zeros((size, stop - first), np.float32)
    for i in range(size):
        centre = start + (i + 0.5) * scale
        weights = 0.0
        for j in range(int(np.floor(centre - support)), int(np.ceil(centre + support))):
            weight = 1.0 - abs((j + 0.5 - centre) / support)
            if weight <= 0.0:
                continue
            weights += weight
            if first <= j < stop:
                out[i, j - first] = weight
        if weights > 0.0:
            for j in range(stop - first):
                out[i, j] /= weights
    return out


@njit(cache=True, nogil=True)
def _band(weights: np.ndarray) -> np.ndarray:
    """Per output row of a resampling matrix, the [first, stop) columns holding its non-zeros."""
    band = np.zeros((weights.shape[0], 2), np.int64)
    for i in range(weights.shape[0]):
        first, stop = weights.shape[1], 0
        for j in range(weights.shape[1]):
            if weights[i, j] != 0.0:
                first, stop = min(first, j), j + 1
        band[i, 0], band[i, 1] = first, max(first, stop)
    return band


@njit(cache=True, nogil=True)
def _resample_2d(crop: np.ndarray, along_y: np.ndarray, along_x: np.ndarray) -> np.ndarray:
    """along_y @ crop @ along_x.T (size x size float32) over the weights' bands only: a few taps
    per output pixel instead of BLAS over mostly-zero matrices (multi-threaded BLAS also stalls
    badly in busy loader workers), and the same sums in the same order on every CPU."""
    band_y, band_x = _band(along_y), _band(along_x)
    height = crop.shape[0]
    along_rows = np.zeros((height, along_x.shape[0]), np.float32)  # h x size: x resampled
    for c in range(along_x.shape[0]):
        for r in range(height):
            total = np.float32(0.0)
            for j in range(band_x[c, 0], band_x[c, 1]):
                total += along_x[c, j] * np.float32(crop[r, j])
            along_rows[r, c] = total
    out = np.zeros((along_y.shape[0], along_x.shape[0]), np.float32)
    for i in range(along_y.shape[0]):
        for r in range(band_y[i, 0], band_y[i, 1]):
            weight = along_y[i, r]
            for c in range(along_x.shape[0]):
                out[i, c] += weight * along_rows[r, c]
    return out


def mask_alpha(crop: np.ndarray, rect, box: np.ndarray, size: int, flip: bool) -> np.ndarray:
    """A real mask (its h x w uint8 crop at `rect` = x0, y0, x1, y1) cropped to `box` and resized:
    size x size uint8, by the box profiles' operator (see the module docstring)."""
    x0, y0, x1, y1 = rect
    along_y = resample_weights(box[1], box[3] - box[1], size, y0, y1)  # size x h
    along_x = resample_weights(box[0], box[2] - box[0], size, x0, x1)  # size x w
    alpha = _resample_2d(np.ascontiguousarray(crop, np.uint8), along_y, along_x)
    if flip:
        alpha = alpha[:, ::-1]
    return np.floor(np.clip(alpha, 0.0, 255.0) + 0.5).astype(np.uint8)


@njit(cache=True, nogil=True)
def area_table(crop: np.ndarray) -> np.ndarray:
    """(h + 1) x (w + 1) int64 summed-area table of the crop's non-zero pixels."""
    table = np.zeros((crop.shape[0] + 1, crop.shape[1] + 1), np.int64)
    for r in range(crop.shape[0]):
        running = 0
        for c in range(crop.shape[1]):
            running += crop[r, c] != 0
            table[r + 1, c + 1] = table[r, c + 1] + running
    return table


@dataclass
class RealMasks:
    """The decoded real masks of an image's chosen regions: region index -> (crop, rect), and,
    once a training crop asks, a summed-area table per crop (its visible share: four lookups)."""

    crops: dict[int, tuple[np.ndarray, list[int]]]
    tables: dict[int, np.ndarray] = field(default_factory=dict)  # built on first use

    def visible(self, k: int, crop_box: np.ndarray) -> float:
        """Share of region k's mask pixels whose centres lie inside crop_box."""
        if k not in self.tables:
            self.tables[k] = area_table(self.crops[k][0])
        table = self.tables[k]
        x0, y0 = self.crops[k][1][:2]
        h, w = table.shape[0] - 1, table.shape[1] - 1
        # pixel j is inside when crop_box[0] <= j + 0.5 < crop_box[2]
        left = min(max(int(np.ceil(crop_box[0] - 0.5)) - x0, 0), w)
        right = min(max(int(np.ceil(crop_box[2] - 0.5)) - x0, 0), w)
        top = min(max(int(np.ceil(crop_box[1] - 0.5)) - y0, 0), h)
        bottom = min(max(int(np.ceil(crop_box[3] - 0.5)) - y0, 0), h)
        inside = table[bottom, right] - table[top, right] - table[bottom, left] + table[top, left]
        return float(inside) / max(1, int(table[h, w]))


NO_REAL_MASKS = RealMasks({})


@njit(cache=True, nogil=True)
def profile_alphas(
    rows: np.ndarray, cols: np.ndarray, profile_of: np.ndarray, box: np.ndarray, size: int, flip: bool
) -> np.ndarray:
    """Alphas (k x size x size uint8) of k views: view m uses profiles rows[profile_of[m]],
    cols[profile_of[m]] (or is all ones where profile_of[m] < 0, a whole-image view), cropped to
    `box` (x0, y0, x1, y1 in stored pixels; zeros where it extends past the image) and resized."""
    alphas = np.zeros((profile_of.shape[0], size, size), np.uint8)
    for m in range(profile_of.shape[0]):
        k = profile_of[m]
        if k < 0:
            alphas[m] = 255
            continue
        along_y = resample_profile(rows[k], box[1], box[3] - box[1], size)
        along_x = resample_profile(cols[k], box[0], box[2] - box[0], size)
        if flip:
            along_x = along_x[::-1].copy()
        for i in range(size):
            if along_y[i] == 0.0:
                continue
            for j in range(size):
                alphas[m, i, j] = np.uint8(min(255.0, np.floor(along_y[i] * along_x[j] / 255.0 + 0.5)))
    return alphas


@njit(cache=True, nogil=True)
def visible_fractions(boxes: np.ndarray, chosen: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """Share of each chosen box's area inside the crop (1 for whole-image views, index < 0)."""
    out = np.ones(chosen.shape[0], np.float64)
    for m in range(chosen.shape[0]):
        k = chosen[m]
        if k < 0:
            continue
        width = min(boxes[k, 2], crop[2]) - max(boxes[k, 0], crop[0])
        height = min(boxes[k, 3], crop[3]) - max(boxes[k, 1], crop[1])
        area = (boxes[k, 2] - boxes[k, 0]) * (boxes[k, 3] - boxes[k, 1])
        out[m] = max(width, 0.0) * max(height, 0.0) / area if area > 0 else 0.0
    return out


@dataclass
class EncodedCrop:
    """An image left for the device to decode (LoaderOptions.decode = "device"): its JPEG and the
    crop the CPU path would have resized."""

    jpeg: bytes
    box: np.ndarray  # x0, y0, x1, y1 in stored pixels (the JPEG's own, decoded at full size)
    flip: bool


@dataclass
class ImageViews:
    """What one image contributes to a batch: one image, k alphas over it."""

    image: np.ndarray | None  # size x size x 3 uint8; None: see `encoded`
    alphas: np.ndarray  # k x size x size uint8
    phrases: list[str]  # k
    region_ids: list[int]  # k; -1 for a whole-image view, relation_views.RELATION_VIEW for a relation view
    image_id: int
    encoded: EncodedCrop | None = None  # set instead of `image` when the device decodes
    negatives: RelationNegatives | None = None  # the relation views' hard negatives


@dataclass
class SampleRegions:
    """A sample's JSON, parsed once into what view-making needs."""

    width: int
    height: int
    image_id: int
    boxes: np.ndarray  # K x 4 float64, stored pixels
    phrases: list[str]
    region_ids: list[int]
    distinct: list[int]  # first region of each phrase (ignoring case)
    cover: int  # the largest region if it covers full_image_min_cover of the image, else -1

    @classmethod
    def of(cls, meta: dict, min_cover: float | None = None) -> "SampleRegions":
        """`min_cover`: the share of the image a region must cover to stand in for a whole-image
        caption (`cover`); None: no whole-image views (evaluation)."""
        regions = meta["regions"]
        boxes = np.asarray(regions["box"], np.float64).reshape(-1, 4)
        first_of_phrase: dict[str, int] = {}
        for index, phrase in enumerate(regions["phrase"]):
            first_of_phrase.setdefault(phrase.lower(), index)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        largest = int(np.argmax(areas)) if len(areas) else -1
        covers = min_cover is not None and largest >= 0 and areas[largest] >= min_cover * meta["width"] * meta["height"]
        return cls(
            meta["width"], meta["height"], meta["image_id"], boxes, regions["phrase"], regions["region_id"],
            list(first_of_phrase.values()), largest if covers else -1,
        )


def choose_regions(regions: SampleRegions, count: int, options: LoaderOptions, rng: random.Random) -> np.ndarray:
    """Indices of `count` regions with distinct phrases (ignoring case), or fewer if the image
    has fewer; the last may be -1: a whole-image view (see the module docstring)."""
    chosen = rng.sample(regions.distinct, min(count, len(regions.distinct)))
    if chosen and options.full_image_ratio and rng.random() < options.full_image_ratio:
        if regions.cover >= 0 and regions.cover not in chosen:
            chosen[-1] = -1
    return np.array(chosen, np.int64)


def visible_shares(regions: SampleRegions, chosen: np.ndarray, crop: np.ndarray, real: RealMasks) -> np.ndarray:
    """Share of each chosen region inside the crop: of its box's area, or of its mask's pixels."""
    shares = visible_fractions(regions.boxes, chosen, crop)
    for m, k in enumerate(chosen.tolist()):
        if k in real.crops:
            shares[m] = real.visible(k, crop)
    return shares


def random_crop(
    regions: SampleRegions, chosen: np.ndarray, options: LoaderOptions, rng: random.Random,
    real: RealMasks = NO_REAL_MASKS, keep: np.ndarray = np.zeros((0, 4)),
) -> np.ndarray:
    """A crop (x0, y0, x1, y1) in which every chosen region keeps min_visible of its area (of its
    mask's pixels where it has a real mask), and so does every box of `keep` (M x 4)."""
    width, height = regions.width, regions.height
    area = width * height
    low, high = math.log(options.crop_ratio[0]), math.log(options.crop_ratio[1])
    for _ in range(10):
        target = area * rng.uniform(*options.crop_scale)
        ratio = math.exp(rng.uniform(low, high))
        crop_w, crop_h = math.sqrt(target * ratio), math.sqrt(target / ratio)
        if crop_w > width or crop_h > height:
            continue
        x0, y0 = rng.uniform(0, width - crop_w), rng.uniform(0, height - crop_h)
        crop = np.array([x0, y0, x0 + crop_w, y0 + crop_h])
        shares = np.concatenate([visible_shares(regions, chosen, crop, real), visible_fractions(keep, np.arange(len(keep)), crop)])
        if shares.min() >= options.min_visible:
            return crop
    return np.array([0.0, 0.0, float(width), float(height)])


def crop_views(
    image, rows: np.ndarray, cols: np.ndarray, regions: SampleRegions, chosen: np.ndarray, size: int,
    options: LoaderOptions, rng: random.Random, real: RealMasks = NO_REAL_MASKS, encoded: bytes | None = None,
    relations: SampleRelations | None = None, chosen_relations: Sequence[int] = (),
) -> ImageViews:
    """The training views of the `chosen` regions (-1: a whole-image view; rows[m], cols[m] are
    view m's profiles; `real` holds the real masks of those that have one), then of the chosen
    relations (fcdata.relation_views): one random crop and flip of the image, an alpha per view
    through the same geometry. With `image` None the JPEG bytes `encoded` go on with the crop
    instead, for the device to decode (fcdata.device_decode); the alphas, relation views and their
    hard negatives are made here either way.

    Boxes, profiles and crops are in stored pixels (the JSON's width x height); `image` may have
    been decoded at a reduced DCT scale, so only its own resize box is divided by that scale.
    """
    from PIL import Image

    keep = relations.keep_boxes(list(chosen_relations)) if chosen_relations else np.zeros((0, 4))
    box = random_crop(regions, chosen, options, rng, real, keep)
    flip = bool(options.flip and rng.random() < 0.5)
    pixels, crop = None, None
    if image is None:
        crop = EncodedCrop(encoded, box, flip)
    else:
        # Stored pixels per decoded pixel, per axis: a draft decode rounds odd sizes up.
        scale = np.array([regions.width / image.size[0], regions.height / image.size[1]] * 2)
        image_box = np.minimum(box / scale, image.size * 2)  # float error must not step outside
        picture = image.resize((size, size), Image.Resampling.BILINEAR, box=tuple(image_box.tolist()))
        pixels = jpeg.rgb(picture, flip)
    indices = chosen.tolist()
    phrases = [regions.phrases[regions.cover if k < 0 else k] for k in indices]
    alphas = region_alphas(rows, cols, chosen, box, size, flip, real)
    region_ids = [-1 if k < 0 else regions.region_ids[k] for k in indices]
    negatives = None
    if chosen_relations:
        shown = relation_views.relation_views(
            relations, list(chosen_relations), box, size, flip, options.relation_weights, regions.height, regions.width
        )
        alphas = np.concatenate([alphas, shown.alphas])
        phrases = phrases + shown.phrases
        region_ids += [relation_views.RELATION_VIEW] * len(shown.phrases)
        negatives = shown.negatives.numbered_from(len(indices), mirror_phrase if flip else None)
    return ImageViews(
        image=pixels,
        alphas=alphas,
        phrases=[mirror_phrase(p) for p in phrases] if flip else phrases,
        region_ids=region_ids,
        image_id=regions.image_id,
        encoded=crop,
        negatives=negatives,
    )


def region_alphas(
    rows: np.ndarray, cols: np.ndarray, chosen: np.ndarray, box: np.ndarray, size: int, flip: bool,
    real: RealMasks = NO_REAL_MASKS,
) -> np.ndarray:
    """k x size x size uint8: each chosen region's mask (its real one where `real` has it, else its
    profiles; all ones for a whole-image view, index -1) cropped to `box` and resized."""
    own_profile = np.where(chosen < 0, -1, np.arange(len(chosen)))
    alphas = profile_alphas(rows, cols, own_profile, box, size, flip)
    for m, k in enumerate(chosen.tolist()):
        if k in real.crops:
            alphas[m] = mask_alpha(*real.crops[k], box, size, flip)
    return alphas


def evaluation_regions(regions: SampleRegions, count: int | None = None) -> np.ndarray:
    """The candidates an evaluation view shows: the first `count` distinct phrases (all if None),
    in JSON order."""
    return np.array(regions.distinct[:count], np.int64)


@dataclass
class _Parsed:
    """A sample's JSON and the profiles (and real masks) of its chosen regions."""

    meta: dict
    regions: SampleRegions
    chosen: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    real: RealMasks


def _parse(sample: dict, min_cover: float | None, choose: Callable[[SampleRegions, dict], np.ndarray]) -> _Parsed:
    """What both views need of a sample, only the chosen regions' masks unpacked (`choose` gets
    the regions and the JSON). Raises on a corrupt sample."""
    meta = orjson.loads(sample[keys.META])  # half json's time on these ~5 KB documents
    layout = meta["mask"]["layout"]
    if layout not in (keys.MASK_LAYOUT_SEPARABLE, keys.MASK_LAYOUT_RUNS):
        raise ValueError(f"unsupported mask layout {layout!r}")
    regions = SampleRegions.of(meta, min_cover)
    chosen = choose(regions, meta)
    # A whole-image view's slot (-1) unpacks region 0's profiles, unused.
    rows, cols = masks.decode_profiles(sample[keys.MASK_PROFILES], meta["height"], np.maximum(chosen, 0).tolist())
    if rows.shape[1] != meta["height"] or cols.shape[1] != meta["width"]:
        raise ValueError("mask profiles do not match the image size in the JSON")
    real = real_masks(sample, meta, chosen) if layout == keys.MASK_LAYOUT_RUNS else NO_REAL_MASKS
    return _Parsed(meta, regions, chosen, rows, cols, real)


def train_views(sample: dict, count: int, size: int, options: LoaderOptions, rng: random.Random) -> ImageViews:
    """A shard sample (bytes by extension) -> its `count` training views: regions drawn, one random
    crop and flip (module docstring), every choice from `rng`. Raises on a corrupt sample."""
    if not isinstance(rng, random.Random):
        raise TypeError("train_views draws every choice from rng (a random.Random); the evaluation view is eval_view")
    relations, chosen_relations = None, []  # the sample's relations, and those its views show

    def choose(regions: SampleRegions, meta: dict) -> np.ndarray:
        nonlocal relations, chosen_relations
        # Relation views are the first draws (fcdata.relation_views); none at relation_ratio 0.
        if options.relation_ratio:
            relations = SampleRelations.of(meta)
            chosen_relations = relation_views.choose_relations(relations, count, options, rng)
        return choose_regions(regions, count - len(chosen_relations), options, rng)

    parsed = _parse(sample, options.full_image_min_cover, choose)
    if options.decode == "device":
        image = None
    else:
        image = jpeg.decode_for_resize(sample[keys.IMAGE], size)  # at a reduced DCT scale where that still covers `size`
    return crop_views(
        image, parsed.rows, parsed.cols, parsed.regions, parsed.chosen, size, options, rng, parsed.real, sample[keys.IMAGE],
        relations, chosen_relations,
    )


@dataclass
class EvalView:
    """A shard sample's evaluation view: letterboxed to S x S, no randomness; K regions."""

    image_id: int
    stored: object  # PIL RGB image at its stored size (what image-space baselines draw on)
    image: np.ndarray  # S x S x 3 uint8
    box_alphas: np.ndarray  # K x S x S uint8: each region's box mask
    alphas: np.ndarray  # K x S x S uint8: its real mask where the sample has one, else its box (then box_alphas itself)
    regions: np.ndarray  # K int64: indices into the sample's regions
    phrases: list[str]  # K
    region_ids: list[int]  # K
    boxes: np.ndarray  # K x 4 float64, stored pixels
    view_boxes: np.ndarray  # K x 4 float64, pixels of the S x S view
    meta: dict  # the sample's JSON
    mask_crops: list  # K: the region's real mask (h x w uint8 crop, rect x0 y0 x1 y1 in stored pixels), or None

    def image_views(self) -> ImageViews:
        """The loader's form of the view (alphas: real masks where present)."""
        return ImageViews(self.image, self.alphas, self.phrases, self.region_ids, self.image_id)


def eval_view(sample: dict, size: int, max_regions: int | None = None, regions: Sequence[int] | None = None) -> EvalView:
    """A shard sample -> its evaluation view: the image padded to a square (fcdata.transforms.letterbox,
    as inference does) and resized to size x size, with the alphas of `regions` (indices into the
    sample's regions) or of the first `max_regions` regions with distinct phrases (all if None)
    through the same geometry. Raises on a corrupt sample."""
    from PIL import Image

    def choose(parsed_regions: SampleRegions, meta: dict) -> np.ndarray:
        if regions is None:
            return evaluation_regions(parsed_regions, max_regions)
        chosen = np.asarray(regions, np.int64).reshape(-1)
        if chosen.size and (chosen.min() < 0 or chosen.max() >= len(parsed_regions.phrases)):
            raise IndexError(f"region index out of range for {len(parsed_regions.phrases)} regions: {chosen.tolist()}")
        return chosen

    parsed = _parse(sample, None, choose)
    width, height = parsed.regions.width, parsed.regions.height
    stored = Image.open(io.BytesIO(sample[keys.IMAGE])).convert("RGB")
    if stored.size != (width, height):
        raise ValueError(f"the image is {stored.size[0]} x {stored.size[1]}, the JSON says {width} x {height}")
    image, _ = letterbox(np.asarray(stored), _NO_ALPHAS, size)
    side, left, top = letterbox_placement(width, height)
    square = np.array([-left, -top, side - left, side - top], np.float64)  # the square in stored pixels
    chosen = parsed.chosen
    box_alphas = region_alphas(parsed.rows, parsed.cols, chosen, square, size, False)
    alphas = box_alphas
    if parsed.real.crops:
        alphas = box_alphas.copy()
        for m, k in enumerate(chosen.tolist()):
            if k in parsed.real.crops:
                alphas[m] = mask_alpha(*parsed.real.crops[k], square, size, False)
    boxes = parsed.regions.boxes[chosen]
    return EvalView(
        image_id=parsed.regions.image_id, stored=stored, image=image, box_alphas=box_alphas, alphas=alphas,
        regions=chosen, phrases=[parsed.regions.phrases[k] for k in chosen.tolist()],
        region_ids=[parsed.regions.region_ids[k] for k in chosen.tolist()], boxes=boxes,
        view_boxes=letterbox_boxes(boxes, width, height, size), meta=parsed.meta,
        mask_crops=[parsed.real.crops.get(k) for k in chosen.tolist()],
    )


_NO_ALPHAS = np.zeros((0, 1, 1), np.uint8)


def real_masks(sample: dict, meta: dict, chosen: np.ndarray) -> RealMasks:
    """The real masks of the chosen regions of a runs-v1 sample (only those are decoded)."""
    mask = meta["mask"]
    with_mask = [k for k in dict.fromkeys(chosen.tolist()) if k >= 0 and mask["mask_of"][k] >= 0]
    if not with_mask:
        return NO_REAL_MASKS
    stored = sorted({mask["mask_of"][k] for k in with_mask})
    rects = segmasks.rects_of(mask)
    crops = dict(zip(stored, segmasks.decode_mask_crops(sample[segmasks.member_name(mask)], rects, mask["graded"], stored)))
    return RealMasks({k: (crops[mask["mask_of"][k]], rects[mask["mask_of"][k]].tolist()) for k in with_mask})
