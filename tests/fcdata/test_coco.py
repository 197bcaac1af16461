"""fc shard --coco-instances: matched regions hold exactly their instance's mask."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fcdata import coco, reader, segmasks
from fcdata.errors import UserError
from fcdata.options import ShardOptions, SynthOptions
from fcdata.shard import shard_vg
from fcdata.synth import generate_vg
from fcdata.synth_coco import INSTANCES_FILE


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco") / "vg"
    generate_vg(root, SynthOptions(num_images=16, regions_per_image=12, long_side_px=(200, 320)))
    return root


def expected_mask(ann: dict, image: dict, width: int, height: int) -> np.ndarray:
    """annToMask at COCO's size, then the documented resampling: area average, kept from half."""
    from PIL import Image
    from pycocotools.coco import COCO

    api = COCO()
    api.dataset = {"images": [image], "annotations": [ann], "categories": [{"id": 1, "name": "shape"}]}
    api.createIndex()
    full = api.annToMask(ann)
    if full.shape != (height, width):
        full = np.asarray(Image.fromarray(full * np.uint8(255)).resize((width, height), Image.Resampling.BOX)) >= 128
    return full.astype(bool)


def test_matched_regions_hold_their_instance_mask(corpus, tmp_path):
    """Every region with a COCO mask equals pycocotools' annToMask brought to the stored size,
    for polygons, compressed and uncompressed (crowd) RLE, and rescaled COCO sizes."""
    out = tmp_path / "shards"
    options = ShardOptions(shard_samples=8, workers=1, strict=True, val_fraction=0.0, coco_instances=(str(corpus / INSTANCES_FILE),))
    summary = shard_vg(corpus, out, options).data
    instances = json.loads((corpus / INSTANCES_FILE).read_text())
    images = {i["id"]: i for i in instances["images"]}
    anns = {a["id"]: a for a in instances["annotations"]}
    coco_of = {r["image_id"]: r["coco_id"] for r in json.loads((corpus / "image_data.json").read_text())}
    seen_kinds, masked = set(), 0
    for shard in sorted(out.glob("train-*.tar")):
        for sample in reader.read_shard(shard):
            meta = sample.meta
            if meta["mask"]["layout"] != "runs-v1":
                continue
            coco_image = images[coco_of[meta["image_id"]]]
            for k, source in enumerate(sample.mask_sources):
                if source != segmasks.SOURCE_COCO:
                    continue
                # Which annotation: the best IoU match, recomputed here from the file.
                own = [a for a in instances["annotations"] if a["image_id"] == coco_image["id"]]
                scale = np.array([meta["width"] / coco_image["width"], meta["height"] / coco_image["height"]] * 2)
                boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in own]) * scale
                best = coco.match_instances(np.array([meta["regions"]["box"][k]]), boxes, 0.5)[0]
                ann = own[best]
                kind = "polygon" if isinstance(ann["segmentation"], list) else "crowd" if ann["iscrowd"] else "rle"
                seen_kinds.add((kind, coco_image["width"] != meta["width"]))
                expected = expected_mask(ann, coco_image, meta["width"], meta["height"])
                np.testing.assert_array_equal(sample.masks[k] > 0, expected)
                assert set(np.unique(sample.masks[k]).tolist()) <= {0, 255}
                masked += 1
    assert masked == summary["masks"]["regions_by_source"]["coco"] > 0
    assert {kind for kind, _ in seen_kinds} == {"polygon", "rle", "crowd"}
    assert any(rescaled for _, rescaled in seen_kinds)
    counts = summary["masks"]["coco"]
    assert counts["regions_matched"] == masked and counts["images_with_instances"] > 0
    assert summary["masks"]["regions_by_source"]["box"] == summary["regions"]["kept"] - masked


def test_matching_ties_go_to_the_lower_annotation_id():
    """Two identical instance boxes: the first (lowest id) wins; below the threshold: none."""
    regions = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float64)
    instances = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [52, 52, 70, 70]], np.float64)
    assert coco.match_instances(regions, instances, 0.5).tolist() == [0, -1]


@pytest.mark.parametrize(
    "segmentation",
    [[[1, 2, 3]], {"size": [5, 5], "counts": [1, 2]}, {"size": [4, 4], "counts": "abc"}, "nonsense", [[0, 0, 1, 1, 2, "x"]]],
)
def test_malformed_segmentations_are_value_errors(segmentation):
    """A bad polygon or RLE raises ValueError (counted, box kept), never another exception."""
    with pytest.raises(ValueError):
        coco.instance_mask(segmentation, 5, 5)


def test_bad_inputs_are_one_line_errors(corpus, tmp_path):
    """Missing file, not JSON, not COCO, and a COCO file for other images: UserError."""
    missing = tmp_path / "nope.json"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"images": [{"id": 1, "width": 5, "height": 5}], "annotations": []}))
    listy = tmp_path / "list.json"
    listy.write_text("[]")
    for path, message in ((missing, "does not exist"), (broken, "cannot read"), (listy, "not a COCO instances"), (other, "none of its images")):
        options = ShardOptions(workers=1, coco_instances=(str(path),))
        with pytest.raises(UserError, match=message):
            shard_vg(corpus, tmp_path / f"out-{path.stem}", options)
