import json

from fcdata import reasons, vg
from fcdata.options import ShardOptions
from fcdata.shard import shard_vg
from fcdata.synth_scale import ScaleOptions, generate_vg_scale


def test_vg_scale_files_are_vg_json_with_the_stated_counts(tmp_path):
    """The four files are valid JSON in VG 1.4's layout, hold the counts the report states,
    and parse through fcdata.vg; only the first image_files images have a JPEG, at the stated size."""
    from PIL import Image

    report = generate_vg_scale(tmp_path, ScaleOptions(num_images=2100, image_files=3, seed=1))
    regions = json.loads((tmp_path / "region_descriptions.json").read_text())
    objects = json.loads((tmp_path / "objects.json").read_text())
    images = json.loads((tmp_path / "image_data.json").read_text())
    relationships = json.loads((tmp_path / "relationships.json").read_text())
    assert report["counts"] == {
        "images": len(images),
        "regions": sum(len(r["regions"]) for r in regions),
        "objects": sum(len(o["objects"]) for o in objects),
        "relationships": sum(len(r["relationships"]) for r in relationships),
    }
    counts = report["counts"]
    assert 45 < counts["regions"] / 2100 < 55 and 30 < counts["objects"] / 2100 < 40
    assert 19 < counts["relationships"] / 2100 < 24  # VG 1.4: 2.3M over 108,077 images
    # ~320 bytes a relationship, as VG 1.4's records: the full-size file is ~0.74 GB.
    assert 280 < report["bytes"]["relationships"] / counts["relationships"] < 360
    object_boxes = {
        (record["image_id"], o["object_id"]): [o[k] for k in "xywh"] for record in objects for o in record["objects"]
    }
    spellings = set()
    for record in relationships:
        for relation in record["relationships"]:
            for end in (relation["subject"], relation["object"]):
                spellings.add("name" if "name" in end else "names")
                box = object_boxes[record["image_id"], end["object_id"]]  # a real object of the image
                assert sum(a != b for a, b in zip(box, [end[k] for k in "xywh"])) <= 1  # bar a planted quirk
            assert relation["subject"]["object_id"] != relation["object"]["object_id"]
    assert spellings == {"name", "names"}
    phrases = [region["phrase"] for record in regions for region in record["regions"]]
    assert any('"' in p for p in phrases) and any("\\" in p for p in phrases) and any("\n" in p for p in phrases)
    annotations = vg.load_vg(tmp_path)
    assert annotations.regions.num_rows == report["counts"]["regions"]
    assert annotations.objects.num_rows == report["counts"]["objects"]
    assert sorted(vg.index_image_files(tmp_path)) == [1, 2, 3]
    with Image.open(tmp_path / "VG_100K" / "2.jpg") as picture:
        assert picture.size == (images[1]["width"], images[1]["height"])


def test_vg_scale_files_depend_only_on_the_options(tmp_path):
    """Same options, byte-identical annotation files."""
    for name in ("a", "b"):
        generate_vg_scale(tmp_path / name, ScaleOptions(num_images=50, seed=3))
    for file in ("image_data.json", "region_descriptions.json", "objects.json", "relationships.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_relationships_do_not_change_the_other_files(tmp_path):
    """Relationships draw from their own random stream: without them (per image 0) the other three
    files are byte-identical and no relationships.json is left behind."""
    generate_vg_scale(tmp_path / "with", ScaleOptions(num_images=50, seed=3, image_files=2))
    (tmp_path / "without").mkdir()
    (tmp_path / "without" / "relationships.json").write_text("[]")  # a stale one from an earlier run
    report = generate_vg_scale(tmp_path / "without", ScaleOptions(num_images=50, seed=3, image_files=2, relationships_per_image=0))
    assert "relationships" not in report["counts"] and not (tmp_path / "without" / "relationships.json").exists()
    for file in ("image_data.json", "region_descriptions.json", "objects.json", "VG_100K/2.jpg"):
        assert (tmp_path / "with" / file).read_bytes() == (tmp_path / "without" / file).read_bytes()


def test_fc_shard_parses_the_relationships_and_counts_the_planted_drops(tmp_path):
    """fc shard reads the generated relationships.json: every one listed, the planted bad boxes
    dropped under their reasons, the planted repeats merged; --no-relations reads none."""
    root = tmp_path / "vg"
    report = generate_vg_scale(root, ScaleOptions(num_images=120, image_files=120, seed=5))
    summary = shard_vg(root, tmp_path / "out", ShardOptions(workers=1, strict=True)).data
    planted, relations = report["planted_relationship_drops"], summary["relations"]
    assert relations["listed"] == report["counts"]["relationships"] and relations["in_skipped_images"] == 0
    assert relations["kept"] + sum(relations["dropped"].values()) == relations["listed"]
    dropped = relations["dropped"]
    assert dropped[reasons.DROP_EMPTY_BOX] == planted[reasons.DROP_EMPTY_BOX] > 0
    assert dropped[reasons.DROP_OUTSIDE_IMAGE] == planted[reasons.DROP_OUTSIDE_IMAGE] > 0
    # Random pairs can repeat an earlier one by chance (same objects and predicate): at least the planted.
    assert planted[reasons.DROP_DUPLICATE] > 0
    assert planted[reasons.DROP_DUPLICATE] <= dropped[reasons.DROP_DUPLICATE] <= planted[reasons.DROP_DUPLICATE] + 3
    assert set(dropped) <= {reasons.DROP_EMPTY_BOX, reasons.DROP_OUTSIDE_IMAGE, reasons.DROP_DUPLICATE, reasons.DROP_TOO_SMALL}
    skipped = shard_vg(root, tmp_path / "no-relations", ShardOptions(workers=1, relations=False)).data
    assert "relations" not in skipped and skipped["regions"] == summary["regions"]
