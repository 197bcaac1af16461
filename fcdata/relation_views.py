"""Relation views for training, and the hard negatives they carry.

A relation view shows one (subject, predicate, object) relation of the sample's `relations`
columns: its alpha is graded, `relation_weights` = (subject, object, background), default
(1, 0.5, 0), the larger weight where the boxes overlap (as fcdata.relations.relation_alpha), and
its caption is the relation phrase ("man riding horse"). It shares the image's one crop and flip
with the region views (the crop keeps `min_visible` of both boxes), so a relation view and the
image's region views are negatives that only the alpha tells apart. Subject and object are their
boxes (binary, the sharder's pixel-centre rule): relations store boxes, not masks.

Which views: each view of an image that has relations is a relation view with probability
`relation_ratio` (the image's other views are region views, as before), the relations distinct
phrases. These are the first draws from the sample's RNG, made only where the ratio is above 0
and the image has relations: a ratio of 0 leaves the stream of region views exactly as it was.

Hard negatives, only a relational model can reject them (fctrain.loss adds them to the view's
own row of the contrastive loss):
- a negative image of the phrase: the same pair with the weights swapped (the object at the
  subject's weight and the subject at the object's). Left out where the phrase cannot tell the
  two apart: subject and object of the same name with a symmetric predicate ("cup next to cup"),
  or a reversed pair that the image lists under the same phrase.
- negative texts of the view, at most NEGATIVE_TEXTS: the inverse-direction phrase ("horse riding
  man": object, predicate, subject; not where the names are equal, it would read the same), and
  the pair with another predicate of the image that the pair does not hold ("man beside horse").
A flipped view mirrors its negative texts too ("left" <-> "right"), as its phrase.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fcdata import masks
from fcdata.options import LoaderOptions

NEGATIVE_TEXTS = 2  # negative captions per relation view at most: the inverse phrase, another predicate
RELATION_VIEW = -2  # the region id of a relation view (-1 is a whole-image view)
# Predicates whose subject and object can trade places with the same meaning: with equal names
# their swapped view is the same relation, not a negative.
SYMMETRIC_PREDICATES = frozenset({"next to", "near", "beside", "by", "close to", "adjacent to", "and", "with"})


@dataclass
class SampleRelations:
    """A sample's relations, parsed once into what view-making needs."""

    subject_boxes: np.ndarray  # R x 4 float64, stored pixels
    object_boxes: np.ndarray  # R x 4 float64
    phrases: list[str]
    subjects: list[str]  # subject names
    predicates: list[str]
    objects: list[str]  # object names
    distinct: list[int]  # first relation of each phrase (ignoring case)

    @classmethod
    def of(cls, meta: dict) -> "SampleRelations | None":
        """The relations of a sample's JSON; None where it has none (or was sharded without them)."""
        columns = meta.get("relations")
        if not columns or not columns["phrase"]:
            return None
        first_of_phrase: dict[str, int] = {}
        for index, phrase in enumerate(columns["phrase"]):
            first_of_phrase.setdefault(phrase.lower(), index)
        return cls(
            np.asarray(columns["subject_box"], np.float64).reshape(-1, 4),
            np.asarray(columns["object_box"], np.float64).reshape(-1, 4),
            columns["phrase"], columns["subject_name"], columns["predicate"], columns["object_name"],
            list(first_of_phrase.values()),
        )

    def keep_boxes(self, chosen: list[int]) -> np.ndarray:
        """The boxes a training crop must keep visible for these relations: 2k x 4."""
        return np.concatenate([self.subject_boxes[chosen], self.object_boxes[chosen]]).reshape(-1, 4)


def choose_relations(relations: SampleRelations | None, views: int, options: LoaderOptions, rng: random.Random) -> list[int]:
    """The relations (indices, distinct phrases) shown by this image's relation views: each of its
    `views` is one with probability relation_ratio, as many as the image has phrases."""
    if relations is None or not options.relation_ratio:
        return []
    wanted = sum(rng.random() < options.relation_ratio for _ in range(views))
    return rng.sample(relations.distinct, min(wanted, len(relations.distinct)))


@dataclass
class RelationNegatives:
    """The hard negatives of an image's relation views; `*_view` index the image's own views."""

    alphas: np.ndarray  # m x S x S uint8: swapped views, negative images
    alpha_view: list[int]  # m: the view whose phrase each is a negative image of
    alpha_phrases: list[str]  # m: the phrase the image lists for the swapped pair, "" where none
    texts: list[str] = field(default_factory=list)  # n negative captions
    text_view: list[int] = field(default_factory=list)  # n: the view each is a negative text of

    def __len__(self) -> int:
        return len(self.alpha_view) + len(self.text_view)

    def numbered_from(self, offset: int, mirror: Callable[[str], str] | None) -> "RelationNegatives":
        """The same negatives for views numbered from `offset`, their texts mirrored if asked."""
        texts, phrases = (self.texts, self.alpha_phrases) if mirror is None else (
            [mirror(t) for t in self.texts], [mirror(p) for p in self.alpha_phrases]
        )
        return RelationNegatives(
            self.alphas, [v + offset for v in self.alpha_view], phrases, texts, [v + offset for v in self.text_view]
        )

    def first(self, views: int) -> "RelationNegatives":
        """The negatives of the first `views` views (an image cut short at a batch's end)."""
        keep = [m for m, v in enumerate(self.alpha_view) if v < views]
        texts = [n for n, v in enumerate(self.text_view) if v < views]
        return RelationNegatives(
            self.alphas[keep], [self.alpha_view[m] for m in keep], [self.alpha_phrases[m] for m in keep],
            [self.texts[n] for n in texts], [self.text_view[n] for n in texts],
        )


@dataclass
class RelationViews:
    alphas: np.ndarray  # k x S x S uint8
    phrases: list[str]  # k, not yet mirrored
    negatives: RelationNegatives  # views numbered from 0 (the caller offsets them)


def relation_views(
    relations: SampleRelations, chosen: list[int], crop: np.ndarray, size: int, flip: bool,
    weights: tuple[float, float, float], height: int, width: int,
) -> RelationViews:
    """The views of the `chosen` relations over `crop` (x0, y0, x1, y1, stored pixels; as the
    image was resized to size x size and flipped), with their hard negatives."""
    from fcdata.augment import profile_alphas

    count = len(chosen)
    boxes = relations.keep_boxes(chosen)  # subjects, then objects
    rows, cols = masks.box_profiles(boxes, height, width, 0.0)
    box_alphas = profile_alphas(rows, cols, np.arange(2 * count), crop, size, flip)  # 2k x S x S uint8
    subject, obj = box_alphas[:count], box_alphas[count:]
    alphas = graded(subject, obj, weights)
    swap, texts = [], []
    for m, index in enumerate(chosen):
        reversed_phrase = _reversed_phrase(relations, index)
        if _swap_is_negative(relations, index, reversed_phrase):
            swap.append((m, reversed_phrase or ""))
        texts += [(m, text) for text in negative_texts(relations, index)]
    negatives = RelationNegatives(
        graded(obj[[m for m, _ in swap]], subject[[m for m, _ in swap]], weights),
        [m for m, _ in swap], [p for _, p in swap], [t for _, t in texts], [m for m, _ in texts],
    )
    return RelationViews(alphas, [relations.phrases[k] for k in chosen], negatives)


def graded(subject: np.ndarray, obj: np.ndarray, weights: tuple[float, float, float]) -> np.ndarray:
    """k x S x S uint8 alphas max(subject x ws, object x wo, background) of uint8 box alphas."""
    subject_weight, object_weight, background = weights
    alpha = np.maximum(subject.astype(np.float32) * np.float32(subject_weight), obj.astype(np.float32) * np.float32(object_weight))
    return np.floor(np.maximum(alpha, np.float32(background * 255.0)) + 0.5).astype(np.uint8)


def negative_texts(relations: SampleRelations, index: int) -> list[str]:
    """The negative captions of relation `index` (see the module docstring), at most NEGATIVE_TEXTS."""
    subject, predicate, obj = relations.subjects[index], relations.predicates[index], relations.objects[index]
    out = [] if subject.lower() == obj.lower() else [relation_phrase(obj, predicate, subject)]
    held = {
        relations.predicates[k] for k in range(len(relations.phrases))
        if _same_box(relations.subject_boxes[k], relations.subject_boxes[index])
        and _same_box(relations.object_boxes[k], relations.object_boxes[index])
    }
    others = sorted(set(relations.predicates) - held)
    if others:
        # The choice is a function of the relation alone, so it needs no draw from the sample's RNG.
        out.append(relation_phrase(subject, others[index % len(others)], obj))
    phrase = relations.phrases[index].lower()
    return [text for text in out if text.lower() != phrase][:NEGATIVE_TEXTS]


def relation_phrase(subject: str, predicate: str, obj: str) -> str:
    """A relation phrase as the sharder builds it: "subject predicate object", single-spaced."""
    return " ".join(f"{subject} {predicate} {obj}".split())


def _same_box(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b))


def _reversed_phrase(relations: SampleRelations, index: int) -> str | None:
    """The phrase of a relation of the image whose subject is this one's object and vice versa."""
    for k in range(len(relations.phrases)):
        if _same_box(relations.subject_boxes[k], relations.object_boxes[index]) and _same_box(
            relations.object_boxes[k], relations.subject_boxes[index]
        ):
            return relations.phrases[k]
    return None


def _swap_is_negative(relations: SampleRelations, index: int, reversed_phrase: str | None) -> bool:
    if _same_box(relations.subject_boxes[index], relations.object_boxes[index]):
        return False  # a pair with itself: its swap is itself
    if reversed_phrase is not None and reversed_phrase.lower() == relations.phrases[index].lower():
        return False
    same_name = relations.subjects[index].lower() == relations.objects[index].lower()
    return not (same_name and relations.predicates[index] in SYMMETRIC_PREDICATES)
