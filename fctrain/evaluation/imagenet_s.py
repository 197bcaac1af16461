"""Zero-shot classification on ImageNet-S919 (validation), as Alpha-CLIP's harness scores it:

- DATA/validation/<wnid>/<name>.JPEG and DATA/validation-segmentation/<wnid>/<name>.png, whose
  class id per pixel is R + 256 * G (0 other, 1000 ignore; id k is the k-th wnid of the categories
  file, ImageNetS_categories_im919.txt). An image's class is its folder; its region is the pixels
  of that class (its mask) and their bounding box.
- Classes in the categories file's order, named by the first WordNet lemma of the wnid with its
  underscores (`great_white_shark`): from a names file, or looked up with nltk's WordNet when it is
  installed with its corpus. The template "a photo of a {}.".
- The view: the centred square on the short side resized to the model's input (fcdata.transforms.
  alpha_clip_center_crop), image bicubic and alpha bilinear, as the reference transforms them.
- The metric: the mean over classes of per-class top-1 and top-5 (ties: a random pick).

Alpha rows: alpha_mask / alpha_box / alpha_whole are the mask / box / whole-image rows of
Alpha-CLIP's table; the other methods prompt plain CLIP with the mask's box, and their *_mask
versions with the mask itself (blur / gray outside the mask).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fcdata.errors import UserError
from fctrain.evaluation.common import EvalProgress, NoProgress, Tally, check_positive, prefetched
from fctrain.evaluation.methods import GEOMETRIES, METHODS, MethodTexts, Region, Tower, check_methods, views_of
from fctrain.evaluation.scoring import tie_aware_rank

CATEGORIES_FILE = "ImageNetS_categories_im919.txt"
# Box prompts beside their mask versions; crop_mask is left out: the region's box is its mask's box,
# so it equals crop here.
DEFAULT_METHODS = ("alpha_mask", "alpha_box", "alpha_whole", "whole_image", "crop", "blur", "blur_mask", "red_circle", "grayscale",
                   "grayscale_mask", "falip")
TEMPLATE = "a photo of a {}."
IGNORE_ID = 1000
_WNID = re.compile(r"^n\d{8}$")


@dataclass
class ImageNetSOptions:
    data_dir: Path  # holds validation/, validation-segmentation/ and the categories file
    categories: Path | None = None  # default DATA/ImageNetS_categories_im919.txt
    class_names: Path | None = None  # names file: "wnid name" per line, or one name per line in category order
    methods: tuple[str, ...] = DEFAULT_METHODS
    max_images: int = 0  # 0 = all; otherwise that many, evenly spaced in (class, file name) order
    batch_size: int = 64
    images_per_chunk: int = 16
    examples: int = 8
    workers: int = 0  # threads building views; 0 = one per available core


@dataclass
class ImageNetSReport:
    benchmark: str
    split: str
    settings: dict
    counts: dict
    results: dict[str, dict]  # method -> top1, top5 (class means), image_top1, images
    examples: list[dict] = field(default_factory=list)
    example_images: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {"benchmark": self.benchmark, "split": self.split, "settings": self.settings, "counts": self.counts,
                "results": self.results, "examples": self.examples}


def read_categories(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"{path}: no such file (ImageNet-S's categories file, one wnid per line; --categories)")
    wnids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    bad = [w for w in wnids if not _WNID.match(w)]
    if bad or not wnids:
        raise UserError(f"{path}: expected one WordNet id (n01443537) per line, got {bad[0] if bad else 'nothing'!r}")
    return wnids


def class_names(wnids: list[str], names_file: Path | None) -> tuple[list[str], str]:
    """(one name per wnid, where the names came from)."""
    if names_file is not None:
        if not Path(names_file).is_file():
            raise UserError(f"{names_file}: no such class-names file")
        lines = [line.strip() for line in Path(names_file).read_text().splitlines() if line.strip()]
        keyed = dict(line.split(None, 1) for line in lines if _WNID.match(line.split()[0]) and len(line.split()) > 1)
        if keyed:
            missing = [w for w in wnids if w not in keyed]
            if missing:
                raise UserError(f"{names_file}: no name for {missing[0]} (and {len(missing) - 1} more)")
            return [keyed[w] for w in wnids], f"names file {names_file} (by wnid)"
        if len(lines) != len(wnids):
            raise UserError(f"{names_file}: {len(lines)} names for {len(wnids)} categories (give one per category, in order, or 'wnid name' lines)")
        return lines, f"names file {names_file} (in category order)"
    try:
        from nltk.corpus import wordnet

        return [wordnet.synset_from_pos_and_offset("n", int(w[1:])).lemmas()[0].name() for w in wnids], "nltk WordNet, first lemma"
    except ImportError:
        raise UserError("class names: give --class-names FILE ('wnid name' lines), or install nltk with its WordNet corpus") from None
    except LookupError:
        raise UserError("class names: nltk is installed but its WordNet corpus is not (nltk.download('wordnet')); or give --class-names FILE") from None


@dataclass
class _Item:
    label: int  # index into the categories
    image: Path
    segmentation: Path


def list_items(data_dir: Path, wnids: list[str], max_images: int) -> tuple[list[_Item], Counter]:
    images_dir, masks_dir = data_dir / "validation", data_dir / "validation-segmentation"
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise UserError(f"{folder}: no such folder (ImageNet-S919 has validation/ and validation-segmentation/)")
    counts: Counter = Counter()
    items = []
    for label, wnid in enumerate(wnids):
        for png in sorted((masks_dir / wnid).glob("*.png")):
            candidates = [images_dir / wnid / f"{png.stem}{ext}" for ext in (".JPEG", ".jpg", ".jpeg", ".png")]
            image = next((c for c in candidates if c.is_file()), None)
            if image is None:
                counts["images_missing"] += 1
                continue
            items.append(_Item(label, image, png))
    if max_images and max_images < len(items):
        # Spread over the whole list so that a quick run still covers (nearly) every class.
        keep = np.unique(np.linspace(0, len(items) - 1, max_images).round().astype(int))
        items = [items[i] for i in keep]
    return items, counts


def class_mask(segmentation: Path, class_id: int) -> np.ndarray:
    """H x W uint8 0/255: the pixels of `class_id` (R + 256 G); ignore (1000) and others are 0."""
    from PIL import Image

    with Image.open(segmentation) as picture:
        rgb = np.asarray(picture.convert("RGB")).astype(np.int32)
    ids = rgb[..., 0] + 256 * rgb[..., 1]
    return ((ids == class_id) & (ids != IGNORE_ID)).astype(np.uint8) * 255


def _load(item: _Item, counts: Counter) -> tuple[np.ndarray, Region] | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(item.image) as picture:
            pixels = np.asarray(picture.convert("RGB"))
        mask = class_mask(item.segmentation, item.label + 1)
    except (UnidentifiedImageError, OSError):
        counts["images_unreadable"] += 1
        return None
    if mask.shape != pixels.shape[:2]:
        counts["mask_size_mismatch"] += 1
        return None
    ys, xs = np.nonzero(mask)
    if not len(xs):
        counts["class_absent_from_mask"] += 1
        return None
    return pixels, Region((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)), mask)


@dataclass
class ImageNetSData:
    wnids: list[str]
    names: list[str]
    names_source: str
    items: list[_Item]
    counts: Counter


def read_dataset(options: ImageNetSOptions) -> ImageNetSData:
    """Check the options and list the data (before any model is loaded, so bad input fails fast)."""
    check_methods(options.methods)
    check_positive(batch_size=options.batch_size)
    data_dir = Path(options.data_dir)
    wnids = read_categories(Path(options.categories or data_dir / CATEGORIES_FILE))
    names, names_source = class_names(wnids, options.class_names)
    items, counts = list_items(data_dir, wnids, options.max_images)
    if not items:
        raise UserError(f"{data_dir}: no validation images with segmentations for the {len(wnids)} categories")
    return ImageNetSData(wnids, names, names_source, items, counts)


def evaluate_imagenet_s(model, tokenizer, options: ImageNetSOptions, progress: EvalProgress | None = None, model_note: str = "",
                        data: ImageNetSData | None = None) -> ImageNetSReport:
    """Mean per-class top-1 / top-5 of every method (see the module docstring); `data` from read_dataset."""
    data = data or read_dataset(options)
    wnids, names, names_source, items, counts = data.wnids, data.names, data.names_source, data.items, data.counts
    data_dir = Path(options.data_dir)
    progress = progress or NoProgress()
    views = views_of(options.methods)
    tower = Tower(model, options.batch_size, options.workers)
    with torch.inference_mode():
        classes = MethodTexts(model, tokenizer, [TEMPLATE.format(n) for n in names], options.batch_size, tower.device)
    ranks = {m: [] for m in options.methods}  # (label, top-1, top-5) per image
    tally = Tally(counts, options.examples)
    skips: Counter = Counter()  # written only by `prepare`, which runs in one background thread

    def prepare(chunk: list[_Item]):
        loaded = [(item, _load(item, skips)) for item in chunk]
        loaded = [(item, pair) for item, pair in loaded if pair is not None]
        return loaded, tower.build([(pixels, [region]) for _, (pixels, region) in loaded], views, GEOMETRIES["center_crop"])

    chunks = [items[start : start + options.images_per_chunk] for start in range(0, len(items), options.images_per_chunk)]
    progress.start(len(items), "imagenet-s validation")
    try:
        for chunk, (loaded, built) in zip(chunks, prefetched(prepare, chunks)):
            for (item, (pixels, region)), by_view in zip(loaded, tower.run(built)):
                counts["images"] += 1
                for method in options.methods:
                    scores = sum(by_view[v][0] @ classes.of(METHODS[method]).T for v in METHODS[method]).numpy()
                    _, top1, top5 = tie_aware_rank(scores, item.label)
                    ranks[method].append((item.label, top1, top5))
                    if method == options.methods[0]:
                        tally.example({"image": str(item.image), "box": list(region.box), "truth": names[item.label],
                                       "predicted": names[int(scores.argmax())], "method": method}, str(item.image), pixels)
            progress.advance(len(chunk))
    finally:
        tower.close()
    tally.finish(skips, "images", f"{data_dir}: none of the {len(items)} images could be evaluated ({dict(counts + skips)})")
    results = {m: per_class_means(rows) for m, rows in ranks.items()}
    counts["classes"] = len({label for label, _, _ in next(iter(ranks.values()))})
    settings = {
        "setting": "center-crop", "categories": len(wnids), "class_names": names_source, "template": TEMPLATE,
        "view": "center crop on the short side, resized to the model's input (image bicubic, alpha bilinear)",
        "metric": "mean over classes of per-class top-1 / top-5; ties a random pick",
        "image_size": model.image_size, "max_images": options.max_images, "model": model_note,
    }
    return ImageNetSReport("imagenet-s", "validation", settings, dict(counts), results, tally.examples, tally.example_images)


def per_class_means(rows: list[tuple[int, float, float]]) -> dict:
    """Mean over classes of each class's mean top-1 / top-5 (Alpha-CLIP's metric), and per image."""
    by_class: dict[int, list[tuple[float, float]]] = {}
    for label, top1, top5 in rows:
        by_class.setdefault(label, []).append((top1, top5))
    means = np.array([np.mean(v, axis=0) for v in by_class.values()])  # classes x 2
    return {"top1": float(means[:, 0].mean()), "top5": float(means[:, 1].mean()),
            "image_top1": float(np.mean([r[1] for r in rows])), "images": len(rows), "classes": len(by_class)}
