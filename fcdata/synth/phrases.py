"""VG-like phrases for a scene: one per object, then relational, part and background regions, and
the spatial predicates of its relationships.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from fcdata.synth.scenes import (
    Box,
    SceneObject,
    SceneRegion,
    SceneRelation,
    _position_words,
    min_region_side,
)


TEXTURE_NOUNS = {"plain": "", "striped": "stripes", "dotted": "dots", "checkered": "checks"}
BACKGROUND_ADJECTIVES = (
    "rough", "smooth", "mottled", "dark", "bright", "blurry", "speckled", "faded", "grey", "sandy",
    "dusty", "wet",
)
BACKGROUND_SURFACES = ("ground", "wall", "background", "surface", "pavement")


def _object_phrase(rng: np.random.Generator, obj: SceneObject) -> str:
    """One of several VG-like templates; every one names the (unique) colour and shape."""
    texture_adjective = "" if obj.texture == "plain" else obj.texture
    texture_noun = TEXTURE_NOUNS[obj.texture]
    templates = (
        ("a", obj.size_word, obj.colour, obj.shape),
        ("the", obj.colour, texture_adjective, obj.shape),
        (obj.colour, obj.shape),
        ("a", obj.size_word, texture_adjective, obj.colour, obj.shape),
        (obj.colour, obj.shape, "in the", obj.position),
        ("the", obj.shape, "is", obj.colour),
        ("a", obj.colour, obj.shape, "with", texture_noun) if texture_noun
        else ("a plain", obj.colour, obj.shape),
    )
    phrase = " ".join(word for word in templates[rng.integers(len(templates))] if word)
    # About a quarter of VG phrases start with a capital.
    return phrase[0].upper() + phrase[1:] if rng.random() < 0.25 else phrase


def _spatial_predicate(subject: Box, obj: Box) -> str:
    """"next to" when the boxes nearly touch, else the dominant direction between centres."""
    sx, sy, sw, sh = subject
    ox, oy, ow, oh = obj
    gap_x = max(ox - (sx + sw), sx - (ox + ow), 0)
    gap_y = max(oy - (sy + sh), sy - (oy + oh), 0)
    if max(gap_x, gap_y) < 0.15 * (sw + sh + ow + oh) / 4:
        return "next to"
    dx = (ox + ow / 2) - (sx + sw / 2)
    dy = (oy + oh / 2) - (sy + sh / 2)
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def _union(a: Box, b: Box) -> Box:
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return x0, y0, x1 - x0, y1 - y0


def _part_regions(obj: SceneObject) -> list[SceneRegion]:
    x, y, w, h = obj.box
    parts = (
        ("left half", (x, y, w // 2, h)),
        ("right half", (x + w - w // 2, y, w // 2, h)),
        ("top half", (x, y, w, h // 2)),
        ("bottom half", (x, y + h - h // 2, w, h // 2)),
        ("centre", (x + w // 4, y + h // 4, w // 2, h // 2)),
    )
    return [SceneRegion(f"the {part} of the {obj.label}", box) for part, box in parts]


def _relational_regions(objects: tuple[SceneObject, ...]) -> list[SceneRegion]:
    return [
        SceneRegion(
            f"the {a.label} {_spatial_predicate(a.box, b.box)} the {b.label}", _union(a.box, b.box)
        )
        for a, b in itertools.permutations(objects, 2)
    ]


def _background_region(rng: np.random.Generator, width: int, height: int) -> SceneRegion:
    """A patch whose side is log-uniform from the minimum region side to most of the image."""
    smallest = min_region_side(min(width, height))
    side = math.exp(rng.uniform(math.log(smallest), math.log(0.95 * min(width, height))))
    stretch = math.exp(rng.uniform(-0.5, 0.5))
    w = int(np.clip(round(side * stretch), smallest, width))
    h = int(np.clip(round(side / stretch), smallest, height))
    box = (int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h)
    adjective = BACKGROUND_ADJECTIVES[rng.integers(len(BACKGROUND_ADJECTIVES))]
    surface = BACKGROUND_SURFACES[rng.integers(len(BACKGROUND_SURFACES))]
    where = _position_words(box, width, height)
    place = "in the centre" if where == "centre" else f"near the {where}"
    return SceneRegion(f"a {adjective} patch of {surface} {place}", box)


def _scene_regions(
    rng: np.random.Generator,
    objects: tuple[SceneObject, ...],
    width: int,
    height: int,
    regions_per_image: int,
) -> tuple[SceneRegion, ...]:
    """One region per object, then relational, part and background regions up to the target.

    Extra regions are drawn from shuffled pools (each phrase once) and background patches, whose
    phrases are re-drawn until new; a candidate smaller than the minimum side is passed over.
    """
    regions = [SceneRegion(_object_phrase(rng, obj), obj.box) for obj in objects]
    smallest = min_region_side(min(width, height))
    pools = [_relational_regions(objects), [p for obj in objects for p in _part_regions(obj)]]
    for pool in pools:
        rng.shuffle(pool)
    seen = {region.phrase.lower() for region in regions}
    # Enough draws for every pool phrase plus rejections; the background vocabulary has 540.
    for _ in range(8 * max(0, regions_per_image - len(regions))):
        if len(regions) >= regions_per_image:
            break
        pick = rng.random()
        if pick < 0.3 and pools[0]:
            candidate = pools[0].pop()
        elif pick < 0.6 and pools[1]:
            candidate = pools[1].pop()
        else:
            candidate = _background_region(rng, width, height)
        if min(candidate.box[2:]) >= smallest and candidate.phrase.lower() not in seen:
            seen.add(candidate.phrase.lower())
            regions.append(candidate)
    return tuple(regions)


def _scene_relations(
    rng: np.random.Generator, objects: tuple[SceneObject, ...]
) -> tuple[SceneRelation, ...]:
    pairs = list(itertools.permutations(range(len(objects)), 2))
    count = min(len(pairs), int(rng.integers(len(objects) - 1, 2 * len(objects))))
    chosen = sorted(rng.choice(len(pairs), size=count, replace=False))
    return tuple(
        SceneRelation(a, _spatial_predicate(objects[a].box, objects[b].box), b)
        for a, b in (pairs[i] for i in chosen)
    )
