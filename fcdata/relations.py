"""Relations (subject, predicate, object): box filtering per image for the sharder, and the graded
alpha of a relation view.

A relation is kept when both of its boxes pass the region rules (fcdata.regions.filter_regions:
finite, non-empty, inside the image, not too small) and its phrase is not empty. Visual Genome
lists many relations twice (the same pair annotated by two workers, boxes shifted by a few
pixels): a relation repeating an earlier kept one's phrase (ignoring case) with both the subject
IoU and the object IoU above the duplicate threshold is merged into it (dropped as `duplicate`).

A relation view's alpha is graded: the subject at weight 1, the object at `object_weight`
(default 0.5), the background 0, and where the two overlap the larger weight, so the subject is
never dimmed by its object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from numba import njit

from fcdata import reasons, regions

DEFAULT_WEIGHTS = (1.0, 0.5)  # (subject, object): see relation_alpha


@njit(cache=True, nogil=True)
def _merge_codes(
    subject_codes: np.ndarray, object_codes: np.ndarray, exact_subject: np.ndarray,
    exact_object: np.ndarray, phrase_keys: np.ndarray, duplicate_iou: float,
) -> np.ndarray:
    """One code per relation: the subject's drop code, else the object's, else DUPLICATE where an
    earlier kept relation has the same phrase key and both IoUs above `duplicate_iou`."""
    count = subject_codes.shape[0]
    codes = np.zeros(count, np.int8)
    for k in range(count):
        codes[k] = subject_codes[k] if subject_codes[k] != regions.KEPT else object_codes[k]
        if codes[k] != regions.KEPT:
            continue
        for other in range(k):
            if codes[other] == regions.KEPT and phrase_keys[other] == phrase_keys[k]:
                if (
                    regions._iou(exact_subject, k, exact_subject, other) > duplicate_iou
                    and regions._iou(exact_object, k, exact_object, other) > duplicate_iou
                ):
                    codes[k] = regions.DUPLICATE
                    break
    return codes


def filter_relations(
    subject_xywh: np.ndarray, object_xywh: np.ndarray, phrase_keys: np.ndarray,
    source_width: int, source_height: int, scale_x: float, scale_y: float,
    min_side_px: float, duplicate_iou: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N x 4 source boxes (x, y, w, h) of subjects and objects -> (stored subject boxes, stored
    object boxes, a drop code per relation: regions.KEPT or a reason of reasons.REGION_DROP_CODES).

    Stored boxes are int32 (x0, y0, x1, y1) of the stored image, exactly as region boxes: a
    relation's subject mask equals the mask of a region with the same box."""
    args = (source_width, source_height, scale_x, scale_y, min_side_px, 2.0)  # IoU <= 1: no dedup per box
    subject_boxes, subject_codes, _ = regions.filter_regions(subject_xywh, phrase_keys, *args)
    object_boxes, object_codes, _ = regions.filter_regions(object_xywh, phrase_keys, *args)
    # Duplicates are judged on the stored (rounded) boxes, the only ones filter_regions returns:
    # rounding moves an IoU far less than the gap between a re-annotated pair and a distinct one.
    codes = _merge_codes(
        subject_codes, object_codes, subject_boxes.astype(np.float64), object_boxes.astype(np.float64),
        phrase_keys, duplicate_iou,
    )
    return subject_boxes, object_boxes, codes


# Manifest columns the sharder fills per image where relations were read (null elsewhere).
MANIFEST_COLUMNS = ("relations_listed", "relations_kept") + tuple(
    f"relation_drop_{reason}" for reason in reasons.REGION_DROP_CODES[1:]
)


@dataclass
class RelationRows:
    """One shard's relations, rows of image i at offsets[i]:offsets[i + 1] (built in the parent,
    sent to the worker with the shard task)."""

    offsets: np.ndarray  # int64 [n + 1]
    relationship_id: np.ndarray  # int64 [N]
    subject_xywh: np.ndarray  # float64 [N, 4] source pixels
    object_xywh: np.ndarray  # float64 [N, 4]
    phrase_keys: np.ndarray  # int64 [N], -1 = empty phrase
    text: dict[str, np.ndarray]  # phrase, predicate, subject_name, object_name -> object array [N]
    subject_id: np.ndarray  # int64 [N], -1 = not stated
    object_id: np.ndarray  # int64 [N]

    @classmethod
    def of(cls, taken: pa.Table, offsets: np.ndarray) -> "RelationRows":
        """A shard's rows of a vg.RELATIONS_SCHEMA table, grouped by image (`offsets`)."""

        def numbers(*names: str) -> np.ndarray:
            return np.stack([taken.column(n).to_numpy() for n in names], axis=1).reshape(-1, len(names))

        return cls(
            offsets=offsets,
            relationship_id=taken.column("relationship_id").to_numpy(),
            subject_xywh=numbers(*(f"subject_{k}" for k in "xywh")),
            object_xywh=numbers(*(f"object_{k}" for k in "xywh")),
            phrase_keys=taken.column("phrase_key").to_numpy(),
            text={
                name: np.fromiter(taken.column(name).to_pylist(), dtype=object, count=taken.num_rows)
                for name in ("phrase", "predicate", "subject_name", "object_name")
            },
            subject_id=taken.column("subject_id").to_numpy(),
            object_id=taken.column("object_id").to_numpy(),
        )

    def listed(self, index: int) -> int:
        return int(self.offsets[index + 1] - self.offsets[index])

    def sample_entry(
        self, index: int, source_size: tuple[int, int], stored_size: tuple[int, int],
        min_side_px: float, duplicate_iou: float,
    ) -> tuple[dict, dict]:
        """Image `index` -> (the sample JSON's "relations" columns, its manifest counts)."""
        first, stop = self.offsets[index : index + 2].tolist()
        (source_width, source_height), (width, height) = source_size, stored_size
        subject_boxes, object_boxes, codes = filter_relations(
            self.subject_xywh[first:stop], self.object_xywh[first:stop], self.phrase_keys[first:stop],
            source_width, source_height, width / source_width, height / source_height,
            min_side_px, duplicate_iou,
        )
        kept = np.flatnonzero(codes == regions.KEPT)
        rows = kept + first
        entry = {
            "relationship_id": self.relationship_id[rows].tolist(),
            "phrase": self.text["phrase"][rows].tolist(),
            "predicate": self.text["predicate"][rows].tolist(),
            "subject_name": self.text["subject_name"][rows].tolist(),
            "object_name": self.text["object_name"][rows].tolist(),
            "subject_box": subject_boxes[kept].tolist(),
            "object_box": object_boxes[kept].tolist(),
            "subject_id": [None if i < 0 else i for i in self.subject_id[rows].tolist()],
            "object_id": [None if i < 0 else i for i in self.object_id[rows].tolist()],
        }
        drops = np.bincount(codes, minlength=len(reasons.REGION_DROP_CODES))
        counts = dict(zip(MANIFEST_COLUMNS, [stop - first, len(kept)] + drops[1:].tolist()))
        return entry, counts


def relation_alpha(
    subject, obj, weights: tuple[float, ...] = DEFAULT_WEIGHTS, shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """A graded alpha (H x W float32 in [0, 1]), max(subject x ws, object x wo, background), from
    the subject and the object given as masks (H x W: bool, uint8 0-255 or float 0-1) or as
    (x0, y0, x1, y1) boxes in pixels (then `shape` = (H, W) is needed). `weights` is (subject,
    object) or (subject, object, background), as data.relation_weights; the background is 0 when
    not given. Soft masks keep their ramps, scaled by the weight: a feathered object at 0.5 ramps
    0 -> 0.5."""
    if len(weights) not in (2, 3) or not all(0.0 <= w <= 1.0 for w in weights):
        raise ValueError(f"relation weights must be 2 or 3 values in [0, 1], got {weights}")
    subject_weight, object_weight, background = (*weights, 0.0)[:3]
    subject, obj = _unit(subject, shape), _unit(obj, shape)
    if subject.shape != obj.shape:
        raise ValueError(f"subject mask {subject.shape} and object mask {obj.shape} differ in size")
    alpha = np.maximum(subject * np.float32(subject_weight), obj * np.float32(object_weight))
    return np.maximum(alpha, np.float32(background)) if background else alpha


def box_mask(box, height: int, width: int) -> np.ndarray:
    """H x W bool mask of an (x0, y0, x1, y1) box in pixels (half-open, clipped to the image)."""
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    mask = np.zeros((height, width), bool)
    mask[max(y0, 0) : max(min(y1, height), 0), max(x0, 0) : max(min(x1, width), 0)] = True
    return mask


def _unit(mask, shape: tuple[int, int] | None) -> np.ndarray:
    """A mask (or a box, drawn at `shape`) as float32 in [0, 1]: bool as 0/1, integers as 0-255,
    floats as they are."""
    mask = np.asarray(mask)
    if mask.ndim == 1:
        if mask.shape != (4,) or shape is None:
            raise ValueError("a box is (x0, y0, x1, y1) and needs the image's shape=(height, width)")
        return box_mask(mask, *shape).astype(np.float32)
    if mask.dtype == bool:
        return mask.astype(np.float32)
    if np.issubdtype(mask.dtype, np.integer):
        return mask.astype(np.float32) / 255.0
    return np.clip(mask.astype(np.float32), 0.0, 1.0)
