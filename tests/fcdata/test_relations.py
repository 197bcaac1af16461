import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fcdata import reasons, regions, relations, vg
from fcdata.options import ShardOptions, SynthOptions
from fcdata.reader import read_shard
from fcdata.shard import shard_vg
from fcdata.synth import generate_vg

SMALL = (220, 320)  # long side of test images, px


def end(object_id, box, name, version):
    """A relationship's subject or object in a release's spelling."""
    x, y, w, h = box
    if version == "1.0":
        return {"id": object_id, "x": x, "y": y, "w": w, "h": h, "name": name}
    return {"object_id": object_id, "x": x, "y": y, "w": w, "h": h, "names": [name], "synsets": []}


def relation(relationship_id, predicate, subject, obj, version="1.4"):
    return {
        "id" if version == "1.0" else "relationship_id": relationship_id, "predicate": predicate,
        "synsets": [], "subject": subject, "object": obj,
    }


def write_root(root, relationships, images=((1, 100, 80),)):
    root.mkdir(exist_ok=True)
    (root / "image_data.json").write_text(json.dumps([{"image_id": i, "width": w, "height": h} for i, w, h in images]))
    (root / "region_descriptions.json").write_text("[]")
    (root / "relationships.json").write_text(json.dumps(relationships))
    return root


def records(version):
    key = "id" if version == "1.0" else "image_id"
    return [
        {key: 1, "relationships": [
            relation(7, " Riding ", end(3, (10, 5, 20, 30), "man", version), end(4, (5, 20, 60, 40), "horse", version), version),
            relation(8, "on", end(5, (0, 0, 4, 4), "cup", version), end(6, (0, 0, 90, 70), "  table ", version), version),
        ]},
        {key: 9, "relationships": [relation(9, "near", end(1, (0, 0, 1, 1), "a", version), end(2, (0, 0, 2, 2), "b", version), version)]},
    ]


def test_every_release_spelling_gives_one_table(tmp_path):
    """v1.0 (`id`, `name`) and v1.4 (`relationship_id`, `object_id`, `names`) relationships map to
    one schema; predicates are lower-cased, names trimmed, phrases built "subject predicate object";
    relations of images image_data.json does not list are counted."""
    v10 = vg.load_vg(write_root(tmp_path / "v10", records("1.0")))
    v14 = vg.load_vg(write_root(tmp_path / "v14", records("1.4")))
    assert v10.relations.equals(v14.relations)
    assert v14.relations.schema == vg.RELATIONS_SCHEMA
    assert v14.relations.column("phrase").to_pylist() == ["man riding horse", "cup on table"]
    assert v14.relations.column("object_id").to_pylist() == [4, 6]
    assert v14.relation_drops == v10.relation_drops == {reasons.DROP_NO_IMAGE_RECORD: 1}


def test_python_path_equals_the_arrow_path(tmp_path, monkeypatch):
    """A chunk pyarrow refuses goes through json.loads and gives the same table; a relationship
    whose box holds a string is counted as a bad record on both paths."""
    data = records("1.4")
    data[0]["relationships"].append(relation(10, "on", end(5, ("abc", 0, 4, 4), "cup", "1.4"), end(6, (0, 0, 9, 9), "t", "1.4")))
    data[0]["relationships"].append(relation(11, "on", {"x": 1, "y": 1, "w": 5, "h": 5}, end(6, (0, 0, 9, 9), "t", "1.4")))
    path = write_root(tmp_path, data) / "relationships.json"
    mixed, mixed_drops = vg.read_annotation(path, "relations")  # the string sends it down the Python path
    del data[0]["relationships"][2]
    path.write_text(json.dumps(data))
    fast, fast_drops = vg.read_annotation(path, "relations")

    def refuse(*args):
        raise pa.ArrowInvalid("forced")

    monkeypatch.setattr(vg, "_decode_fast", refuse)
    slow, slow_drops = vg.read_annotation(path, "relations")
    assert fast.equals(slow) and fast.equals(mixed)
    assert mixed_drops == {reasons.DROP_BAD_RECORD: 1} and not fast_drops and not slow_drops
    nameless = next(r for r in fast.to_pylist() if r["relationship_id"] == 11)  # kept, phrase left empty
    assert (nameless["subject_id"], nameless["subject_name"], nameless["phrase"]) == (-1, None, "")


def test_bad_boxes_are_dropped_by_reason_and_duplicates_merged():
    """Each end goes through the region rules; the same phrase with both boxes overlapping an
    earlier kept relation is a duplicate, while the same phrase on another pair is kept."""
    subjects = np.array([[10, 10, 20, 20], [11, 10, 20, 20], [0, 0, 0, 5], [10, 10, 20, 20], [60, 60, 20, 20], [500, 0, 5, 5]], float)
    objects = np.array([[40, 40, 30, 30], [40, 41, 30, 30], [40, 40, 30, 30], [40, 40, 2, 2], [40, 40, 30, 30], [40, 40, 30, 30]], float)
    keys = np.array([1, 1, 1, 1, 1, 2], np.int64)
    subject_boxes, object_boxes, codes = relations.filter_relations(subjects, objects, keys, 100, 100, 1.0, 1.0, 4.0, 0.7)
    assert codes.tolist() == [regions.KEPT, regions.DUPLICATE, regions.EMPTY_BOX, regions.TOO_SMALL, regions.KEPT, regions.OUTSIDE_IMAGE]
    region_boxes, _, _ = regions.filter_regions(subjects, keys, 100, 100, 1.0, 1.0, 4.0, 2.0)
    assert subject_boxes[codes == regions.KEPT].tolist() == region_boxes[codes == regions.KEPT].tolist()
    assert object_boxes[0].tolist() == [40, 40, 70, 70]


def test_graded_alpha_weights_and_overlaps():
    """Subject at 1, object at its weight, background 0, the overlap at the larger weight; soft
    masks keep their ramps scaled by the weight."""
    alpha = relations.relation_alpha((0, 0, 4, 4), (2, 2, 8, 6), weights=(1.0, 0.25), shape=(8, 10))
    assert alpha.dtype == np.float32 and alpha.shape == (8, 10)
    assert alpha[0, 0] == 1.0 and alpha[3, 3] == 1.0  # subject, and where it overlaps the object
    assert alpha[5, 7] == 0.25 and alpha[7, 9] == 0.0
    assert sorted(np.unique(alpha).tolist()) == [0.0, 0.25, 1.0]
    soft = np.array([[0, 128, 255]], np.uint8)
    graded = relations.relation_alpha(np.zeros((1, 3), bool), soft, weights=(1.0, 0.5))
    np.testing.assert_allclose(graded, [[0.0, 0.5 * 128 / 255, 0.5]], rtol=1e-6)
    lit = relations.relation_alpha((0, 0, 4, 4), (2, 2, 8, 6), weights=(1.0, 0.25, 0.1), shape=(8, 10))
    assert lit[7, 9] == np.float32(0.1) and lit[5, 7] == 0.25 and lit[0, 0] == 1.0  # background under both
    with pytest.raises(ValueError, match="differ in size"):
        relations.relation_alpha(np.zeros((2, 2), bool), np.zeros((2, 3), bool))
    with pytest.raises(ValueError, match="needs the image's shape"):
        relations.relation_alpha((0, 0, 4, 4), np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        relations.relation_alpha(np.zeros((2, 2), bool), np.zeros((2, 2), bool), weights=(1.0, 1.5))
    with pytest.raises(ValueError, match="2 or 3 values"):
        relations.relation_alpha(np.zeros((2, 2), bool), np.zeros((2, 2), bool), weights=(1.0,))


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel-vg")
    generate_vg(root, SynthOptions(num_images=8, seed=2, long_side_px=SMALL))
    return root


def test_shards_store_relations_with_the_image_boxes(synth_root, tmp_path):
    """fc shard stores relationships.json's relations as columns whose boxes are the stored
    image's (the synthetic subjects are objects whose regions have the same boxes), and counts
    them in the manifest and the summary."""
    summary = shard_vg(synth_root, tmp_path, ShardOptions(workers=1, strict=True, val_fraction=0.0)).data
    listed = sum(len(r["relationships"]) for r in json.loads((synth_root / "relationships.json").read_text()))
    assert summary["relations"]["listed"] == listed and summary["relations"]["kept"] == listed
    manifest = pq.read_table(tmp_path / "manifest.parquet").to_pydict()
    assert sum(manifest["relations_kept"]) == listed
    seen = 0
    for sample in read_shard(tmp_path / "train-00000.tar"):
        rel, reg = sample.meta["relations"], sample.meta["regions"]
        box_of = {tuple(b) for b in reg["box"]}
        assert set(rel) >= {"phrase", "predicate", "subject_box", "object_box", "subject_name", "object_name"}
        for phrase, subject_box, object_box, s, p, o in zip(
            rel["phrase"], rel["subject_box"], rel["object_box"], rel["subject_name"], rel["predicate"], rel["object_name"]
        ):
            assert phrase == f"{s} {p} {o}"
            assert tuple(subject_box) in box_of and tuple(object_box) in box_of
            seen += 1
    assert seen == listed


def test_no_relations_leaves_samples_as_before(synth_root, tmp_path):
    """--no-relations (and a root without relationships.json) writes no relations entry,
    no relations summary and null manifest counts."""
    summary = shard_vg(synth_root, tmp_path, ShardOptions(workers=1, strict=True, relations=False)).data
    assert "relations" not in summary
    assert all(v is None for v in pq.read_table(tmp_path / "manifest.parquet").column("relations_kept").to_pylist())
    assert all("relations" not in s.meta for s in read_shard(tmp_path / "train-00000.tar"))


def test_show_draws_the_graded_alpha(synth_root, tmp_path):
    """fc show --relations dims the picture by the relation alpha: the subject at full
    brightness, the object at its weight, the rest nearly black."""
    from fcdata.errors import CountingHandler
    from fcdata.show import render_relation, render_shard_samples

    shard_vg(synth_root, tmp_path, ShardOptions(workers=1, strict=True, val_fraction=0.0))
    sample = next(iter(read_shard(tmp_path / "train-00000.tar")))
    picture = np.asarray(render_relation(sample, scale=1)).astype(np.float64)
    height, width = sample.image.shape[:2]
    alpha = relations.relation_alpha(sample.meta["relations"]["subject_box"][0], sample.meta["relations"]["object_box"][0], shape=(height, width))
    image = sample.image.astype(np.float64)
    inside = picture[:height, :width]
    for value, expected_gain in ((1.0, 1.0), (0.5, 0.575), (0.0, 0.15)):
        where = alpha == value
        for shift in range(-3, 4):  # away from the box outlines (2 px) drawn on the edges
            where &= np.roll(alpha, shift, 0) == value
            where &= np.roll(alpha, shift, 1) == value
        where &= image.sum(-1) > 60  # dark pixels would hide the gain in rounding
        gain = inside[where].sum() / image[where].sum()
        assert abs(gain - expected_gain) < 0.05, (value, gain)
    pictures = render_shard_samples([str(tmp_path / "train-00000.tar")], 2, 4, CountingHandler("t"), relations=True)
    assert len(pictures) == 2
