"""Relation benchmark on shards with relations: which (subject, object) pair does "man riding
horse" mean, does the model tell it from "horse riding man", and does the object's alpha weight
do something.

Candidates: for each image, the ordered pairs of its relations (subject box, object box) and the
swap of each (object as subject), at most `max_pairs`. Metrics per method:
- relation selection: for each relation phrase, score every candidate pair of the image; a hit
  when the best pair has the phrase's own subject and object boxes (ties: a random pick).
- swap accuracy: the true pair against its swap alone, 1 / 0.5 (tie) / 0; chance 0.5. Methods
  that see the union of the two boxes (crop, blur, union alpha) cannot tell a pair from its swap,
  so they sit at exactly 0.5: that is what a relational model must beat.
- graded control (the model only): mean cosine of the relation view with the object's own phrase
  (the region phrase whose box is the object box, else its name) as the object's weight goes
  0 -> 1 with the subject at 1; it should rise.

Methods: relation_alpha (the model, graded alpha at `weights` = (subject, object, background), as
the training's data.relation_weights; fc eval takes the run's),
subject_alpha and union_alpha (the model, a binary alpha on the subject's box or the union box),
and on the base weights whole_image, union_crop, union_blur.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fcdata import guard
from fcdata.errors import CountingHandler, UserError
from fcdata.loader import resolve_shards
from fcdata.reader import decode_sample
from fcdata.relation_views import relation_phrase
from fcdata.relations import DEFAULT_WEIGHTS, relation_alpha
from fctrain.evaluation.methods import GEOMETRIES, MethodTexts, Region, Tower
from fctrain.evaluation.scoring import box_iou, text_features, tie_aware_hit
from fctrain.model import RGBAClip

# method -> (the tower view, which box or alpha each candidate shows)
METHODS = {
    "relation_alpha": ("alpha_mask", "graded"),
    "subject_alpha": ("alpha_box", "subject"),
    "union_alpha": ("alpha_box", "union"),
    "whole_image": ("whole_image", "union"),
    "union_crop": ("crop", "union"),
    "union_blur": ("blur", "union"),
}
GRADED_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # object weights of the graded-control curve


@dataclass(frozen=True)
class RelationEvalOptions:
    shards: str = ""  # shard folder, file, pattern or comma list (fcdata.loader.resolve_shards) with relations
    split: str = "val"  # which split's shards to take from a folder
    max_images: int = 200  # images evaluated (those with at least one relation)
    max_pairs: int = 16  # candidate pairs per image, swaps included
    weights: tuple[float, float, float] = (*DEFAULT_WEIGHTS, 0.0)  # relation_alpha's (subject, object, background)
    batch_size: int = 64  # views per forward pass

    def __post_init__(self) -> None:
        if self.max_images < 1 or self.max_pairs < 2 or self.batch_size < 1:
            raise UserError("max_images and batch_size must be >= 1, max_pairs >= 2")
        if len(self.weights) != 3 or not all(0.0 <= w <= 1.0 for w in self.weights):
            raise UserError(f"relation weights must be three values (subject, object, background) in [0, 1], got {self.weights}")


@dataclass
class RelationImage:
    image: np.ndarray  # H x W x 3 uint8, stored size
    pairs: np.ndarray  # P x 2 x 4 float64: candidate (subject box, object box)
    phrases: list[str]  # one per relation of the image
    truth: list[int]  # the candidate of each phrase
    swap: list[int]  # the candidate that is its swap
    object_phrases: list[str]  # each relation's object's own phrase
    inverses: list[str]  # each relation read the other way round ("B p A"), as the training's negative texts


def read_relation_images(options: RelationEvalOptions, handler: CountingHandler | None = None) -> list[RelationImage]:
    """The first `max_images` images of the shards that have relations, as candidates.
    Unreadable shards and samples are skipped and counted in `handler`."""
    handler = handler or CountingHandler("fc eval")
    shards = resolve_shards(options.shards, options.split)
    guard.check_shards(shards, "shards")
    images: list[RelationImage] = []
    for sample in guard.decoded(guard.read_raw(shards, handler), decode_sample, handler):
        relations = sample.meta.get("relations")
        if relations and relations["phrase"]:
            image = _relation_image(sample, relations, options.max_pairs)
            if image is not None:
                images.append(image)
        if len(images) == options.max_images:
            return images
    if not images:
        raise UserError("no image with relations in these shards (shard them with relationships.json, without --no-relations)")
    return images


def inverse_phrases(options: RelationEvalOptions) -> tuple[list[str], list[str]]:
    """Every relation phrase of the benchmark's images and its inverse ("B p A"), in order."""
    images = read_relation_images(options)
    return [p for image in images for p in image.phrases], [p for image in images for p in image.inverses]


def _relation_image(sample, relations: dict, max_pairs: int) -> RelationImage | None:
    pairs: dict[tuple, int] = {}

    def candidate(subject, obj) -> int:
        return pairs.setdefault((tuple(subject), tuple(obj)), len(pairs))

    phrases, truth, swap, object_phrases, inverses = [], [], [], [], []
    region_boxes = sample.boxes.astype(np.float64).reshape(-1, 4)
    columns = ("phrase", "subject_box", "object_box", "subject_name", "predicate", "object_name")
    for phrase, subject, obj, subject_name, predicate, name in zip(*(relations[c] for c in columns)):
        if subject == obj or len(pairs) + 2 > max_pairs and (tuple(subject), tuple(obj)) not in pairs:
            continue  # a pair with itself has no swap
        truth.append(candidate(subject, obj))
        swap.append(candidate(obj, subject))
        phrases.append(phrase)
        inverses.append(relation_phrase(name, predicate, subject_name))
        overlap = box_iou(np.asarray(obj, np.float64), region_boxes) if len(region_boxes) else np.zeros(0)
        object_phrases.append(sample.phrases[int(overlap.argmax())] if len(overlap) and overlap.max() >= 0.9 else name)
    if not phrases:
        return None
    boxes = np.array([[s, o] for s, o in pairs], np.float64).reshape(-1, 2, 4)
    return RelationImage(sample.image, boxes, phrases, truth, swap, object_phrases, inverses)


def _regions(image: RelationImage, shows: str, weights: tuple[float, float, float]) -> list[Region]:
    height, width = image.image.shape[:2]
    regions = []
    for subject, obj in image.pairs:
        union = (min(subject[0], obj[0]), min(subject[1], obj[1]), max(subject[2], obj[2]), max(subject[3], obj[3]))
        if shows == "graded":
            alpha = relation_alpha(subject, obj, weights, shape=(height, width))
            regions.append(Region(union, np.rint(alpha * 255).astype(np.uint8)))
        else:
            regions.append(Region(tuple(subject) if shows == "subject" else union))
    return regions


def _features(tower: Tower, images: list[RelationImage], view: str, shows: str, weights: tuple[float, float, float]) -> list[torch.Tensor]:
    items = [(image.image, _regions(image, shows, weights)) for image in images]
    return [out[view] for out in tower.encode_images(items, (view,), GEOMETRIES["letterbox"])]


def relation_metrics(features: list[torch.Tensor], texts: list[torch.Tensor], images: list[RelationImage]) -> dict:
    """Selection and swap accuracy over every relation phrase of every image."""
    hits, swaps = [], []
    for pair_features, phrase_features, image in zip(features, texts, images):
        scores = (phrase_features @ pair_features.T).numpy()  # phrases x candidates
        for row, (true, swapped) in enumerate(zip(image.truth, image.swap)):
            correct = np.zeros(len(image.pairs), bool)
            correct[true] = True
            hits.append(tie_aware_hit(scores[row], correct))
            gap = scores[row, true] - scores[row, swapped]
            swaps.append(0.5 if abs(gap) <= 1e-6 else float(gap > 0))
    chance = float(np.mean([1.0 / len(image.pairs) for image in images for _ in image.phrases]))
    return {
        "selection": float(np.mean(hits)), "swap": float(np.mean(swaps)), "selection_chance": chance, "relations": len(hits),
        "swap_se": float(np.std(swaps) / np.sqrt(len(swaps))),  # standard error of the mean over the relations
    }


def evaluate_relations(model: RGBAClip, tokenizer, options: RelationEvalOptions, methods: tuple[str, ...] = tuple(METHODS)) -> dict:
    """{"methods": {method: metrics}, "graded_control": {"weights": [...], "object_similarity": [...]}}."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown relation method {unknown[0]!r}; known: {', '.join(METHODS)}")
    images = read_relation_images(options)
    device = model.logit_scale.device
    model.eval()
    with torch.inference_mode():
        texts = [MethodTexts(model, tokenizer, image.phrases, options.batch_size, device) for image in images]
        object_texts = [text_features(model, tokenizer, image.object_phrases, options.batch_size, device) for image in images]
    tower = Tower(model, options.batch_size)
    try:
        report = {
            method: relation_metrics(
                _features(tower, images, *METHODS[method], options.weights), [t.of(METHODS[method][:1]) for t in texts], images
            )
            for method in methods
        }
        curve = []
        for weight in GRADED_WEIGHTS:
            features = _features(tower, images, "alpha_mask", "graded", (options.weights[0], weight, options.weights[2]))
            similarity = [
                float((pair_features[image.truth] * object_features).sum(-1).mean())
                for pair_features, object_features, image in zip(features, object_texts, images)
            ]
            curve.append(float(np.mean(similarity)))
    finally:
        tower.close()
    return {
        "methods": report,
        "graded_control": {"weights": list(GRADED_WEIGHTS), "object_similarity": curve},
        "images": len(images),
        "weights": list(options.weights),
        "architecture": model.architecture,
    }
