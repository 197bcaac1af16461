"""Small datasets in the field's benchmark formats, for tests and for trying `fc eval --benchmark`
without the real data: RefCOCO-style (a COCO instances file with polygon, compressed-RLE and
uncompressed-RLE segmentations, a protocol-2 refs pickle, train2014 JPEGs) and ImageNet-S-style
(validation/ and validation-segmentation/ trees with R + 256 G class PNGs, the categories file).

The contents are chosen to pin the protocols' counting: see the comments on REC_IMAGES and
IMAGENET_S_ITEMS.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# REC: four images. Image 1's proposals pin the IoU rule: B overlaps A with IoU exactly 0.5 (not
# a hit), C with 400/420 (a hit). x, y, w, h.
REC_IMAGES = {
    1: dict(size=(96, 64), objects=[("A", [0, 0, 20, 20]), ("B", [0, 0, 20, 40]), ("C", [0, 0, 20, 21])]),
    2: dict(size=(80, 80), objects=[("D", [5, 5, 30, 30]), ("E", [40, 40, 35, 30])]),
    3: dict(size=(64, 96), objects=[("F", [10, 10, 30, 40]), ("G", [20, 50, 30, 40]), ("H", [0, 0, 64, 96])]),
    4: dict(size=(100, 60), objects=[("I", [60, 10, 30, 30]), ("J", [5, 5, 40, 40])]),
}
# (ref id, image, object, split, sentences); image 4 is missing on disk in the tests that say so.
REC_REFS = [
    (1, 1, "A", "val", ["The red box ON the left", "left red box"]),
    (2, 1, "B", "val", ["tall thing"]),
    (3, 2, "E", "val", ["a blue ball", "blue", "ball bottom right"]),
    (4, 3, "F", "testA", ["man on top"]),
    (5, 3, "G", "testA", ["man below"]),
    (6, 4, "J", "testB", ["green thing"]),
]
ANN_IDS = {name: 100 + n for n, name in enumerate("ABCDEFGHIJ")}


def _polygon(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def write_rec_dataset(root: Path, dataset: str = "refcoco", split_by: str = "unc", missing_images: tuple[int, ...] = ()) -> Path:
    """DATA/<dataset>/{instances.json, refs(<split_by>).p} and DATA/train2014/*.jpg, as users hold them:
    polygons, compressed RLE and uncompressed RLE segmentations, a protocol-2 refs pickle."""
    from pycocotools import mask as coco_mask

    root = Path(root)
    folder = root / dataset
    folder.mkdir(parents=True)
    (root / "train2014").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id, spec in REC_IMAGES.items():
        width, height = spec["size"]
        name = f"COCO_train2014_{image_id:012d}.jpg"
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        picture = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(picture)
        for n, (obj, (x, y, w, h)) in enumerate(spec["objects"]):
            draw.rectangle((x, y, x + w - 1, y + h - 1), fill=((60 * n) % 255, 200, 40 * n))
            if n == 1:  # compressed RLE (counts a string), as COCO stores some masks
                binary = np.zeros((height, width), np.uint8, order="F")
                binary[y : y + h, x : x + w] = 1
                rle = coco_mask.encode(np.asfortranarray(binary))
                segmentation = {"size": [height, width], "counts": rle["counts"].decode()}
            elif n == 2:  # uncompressed RLE (iscrowd), counts a list, column-major runs
                binary = np.zeros((height, width), np.uint8)
                binary[y : y + h, x : x + w] = 1
                flat = binary.T.ravel()
                changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
                segmentation = {"size": [height, width], "counts": np.diff(np.concatenate([[0], changes])).tolist()}
            else:
                segmentation = _polygon(x, y, w, h)
            annotations.append({"id": ANN_IDS[obj], "image_id": image_id, "bbox": [float(v) for v in (x, y, w, h)],
                                "segmentation": segmentation, "category_id": 1, "iscrowd": int(n == 2), "area": float(w * h)})
        if image_id not in missing_images:
            picture.save(root / "train2014" / name, quality=95)
    (folder / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}))
    refs, sent_id = [], 0
    for ref_id, image_id, obj, split, sentences in REC_REFS:
        sents = []
        for raw in sentences:
            sents.append({"raw": raw, "sent": raw.lower(), "sent_id": sent_id, "tokens": raw.lower().split()})
            sent_id += 1
        refs.append({"ref_id": ref_id, "ann_id": ANN_IDS[obj], "category_id": 1, "image_id": image_id, "split": split,
                     "file_name": f"COCO_train2014_{image_id:012d}_{ANN_IDS[obj]}.jpg", "sent_ids": [s["sent_id"] for s in sents],
                     "sentences": sents})
    with open(folder / f"refs({split_by}).p", "wb") as stream:
        pickle.dump(refs, stream, protocol=2)
    return root


# ImageNet-S: 3 classes (the third has no images), class 0 has 3 images, class 1 one.
WNIDS = ["n01443537", "n01484850", "n01491361"]
NAMES = ["goldfish", "great_white_shark", "tiger_shark"]
IMAGENET_S_ITEMS = [(0, "ILSVRC2012_val_00000001", (80, 60)), (0, "ILSVRC2012_val_00000002", (60, 90)),
                    (0, "ILSVRC2012_val_00000003", (70, 70)), (1, "ILSVRC2012_val_00000004", (96, 64))]


def write_imagenet_s(root: Path) -> Path:
    """ImageNetS919-style tree: validation/<wnid>/*.JPEG, validation-segmentation/<wnid>/*.png
    (class id = R + 256 G; 1000 = ignore), the categories file, and a names file."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    (root / "ImageNetS_categories_im919.txt").write_text("\n".join(WNIDS) + "\n")
    (root / "names.txt").write_text("\n".join(f"{w} {n}" for w, n in zip(WNIDS, NAMES)) + "\n")
    for label, stem, (width, height) in IMAGENET_S_ITEMS:
        for sub in ("validation", "validation-segmentation"):
            (root / sub / WNIDS[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(root / "validation" / WNIDS[label] / f"{stem}.JPEG")
        ids = np.zeros((height, width), np.int32)
        ids[10:30, 15:40] = label + 1
        ids[0:3, :] = 1000  # an ignore band
        ids[35:45, 0:10] = 2 if label == 0 else 1  # another class's pixels: not this image's mask
        rgb = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], -1).astype(np.uint8)
        Image.fromarray(rgb).save(root / "validation-segmentation" / WNIDS[label] / f"{stem}.png")
    return root
