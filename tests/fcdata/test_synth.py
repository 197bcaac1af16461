import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from fcdata import options, reasons, synth
from fcdata.errors import UserError
from fcdata.synth import SynthOptions, generate_vg

SMALL = (128, 192)  # long side range: small images keep every test well under a second


def make(tmp_path: Path, name: str = "vg", **fields) -> tuple[Path, synth.SynthReport]:
    out = tmp_path / name
    return out, generate_vg(out, SynthOptions(long_side_px=SMALL, **fields))


def load(root: Path, name: str) -> list:
    return json.loads((root / name).read_text(encoding="utf-8"))


def all_files(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def phrase_words(phrase: str) -> tuple[str, str]:
    """The (colour, shape) an object phrase names: exactly one of each."""
    words = phrase.lower().split()
    (colour,) = [w for w in words if w in synth.COLOURS]
    (shape,) = [w for w in words if w in synth.SHAPES]
    return colour, shape


@pytest.fixture(scope="module")
def quirky(tmp_path_factory) -> tuple[Path, synth.SynthReport]:
    """One dataset with every quirk, shared (read-only) by the tests below."""
    return make(tmp_path_factory.mktemp("quirky"), num_images=40, quirks=True, regions_per_image=12)


def test_same_seed_gives_the_same_bytes(tmp_path):
    """Two runs with one seed write identical files; another seed writes different images."""
    first, _ = make(tmp_path, "a", num_images=5, seed=3, regions_per_image=10)
    second, _ = make(tmp_path, "b", num_images=5, seed=3, regions_per_image=10)
    other, _ = make(tmp_path, "c", num_images=5, seed=4, regions_per_image=10)
    assert all_files(first) == all_files(second)
    assert all_files(first)["VG_100K/1.jpg"] != all_files(other)["VG_100K/1.jpg"]


def test_worker_count_does_not_change_the_bytes(tmp_path):
    """A spawn pool of 2 writes byte-for-byte what one process writes, quirks included."""
    serial, _ = make(tmp_path, "serial", num_images=30, quirks=True, workers=1)
    parallel, _ = make(tmp_path, "parallel", num_images=30, quirks=True, workers=2)
    assert all_files(serial) == all_files(parallel)


def test_layout_and_atomic_writes(tmp_path):
    """VG's files and both image folders exist, no temporary file is left, ids are 1..N."""
    root, report = make(tmp_path, num_images=6)
    names = {p.name for p in root.iterdir()}
    assert set(synth.ANNOTATION_FILES) | {"VG_100K", "VG_100K_2", synth.REPORT_FILE, "coco_instances.json"} == names
    assert not list(root.rglob("*.tmp*"))
    assert [r["image_id"] for r in load(root, "image_data.json")] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in (root / "VG_100K").iterdir()) == ["1.jpg", "3.jpg", "5.jpg"]
    assert sorted(p.name for p in (root / "VG_100K_2").iterdir()) == ["2.jpg", "4.jpg", "6.jpg"]
    assert json.loads((root / synth.REPORT_FILE).read_text()) == json.loads(report.to_json())
    assert report.quirks == {} and report.big_region_ids == []


@pytest.mark.parametrize("version", options.VERSIONS)
def test_field_names_follow_the_release(tmp_path, version):
    """Each release's spelling of every field, as documented in fcdata.synth.writer."""
    root, _ = make(tmp_path, num_images=2, version=version)
    v10 = version == "1.0"
    image = load(root, "image_data.json")[0]
    expected = ["id", "image_url"] if v10 else ["image_id", "url"]
    assert list(image) == expected + ["width", "height", "coco_id", "flickr_id"]
    assert "/VG_100K/" in image[expected[1]]

    record = load(root, "region_descriptions.json")[0]
    assert list(record) == ["id", "regions"]
    region_keys = ["id", "image"] if v10 else ["region_id", "image_id"]
    assert list(record["regions"][0]) == region_keys + ["phrase", "x", "y", "width", "height"]

    objects = load(root, "objects.json")[0]
    obj = objects["objects"][0]
    assert list(objects)[0] == ("id" if v10 else "image_id")
    assert ("id" if v10 else "object_id") in obj
    assert ("names" if version == "1.4" else "name") in obj
    if version == "1.0":
        assert "synsets" not in obj
    elif version == "1.2":
        assert isinstance(obj["synsets"], list)

    relationships = load(root, "relationships.json")[0]
    relation = relationships["relationships"][0]
    assert list(relationships)[0] == ("id" if v10 else "image_id")
    assert list(relation)[0] == ("id" if v10 else "relationship_id")
    assert relation["predicate"] in {"left of", "right of", "above", "below", "next to"}
    assert {"x", "y", "w", "h", "name"} <= set(relation["subject"]) & set(relation["object"])


def test_synsets_are_sometimes_absent_in_1_4(tmp_path):
    """v1.4 omits `synsets` for shapes without a WordNet sense, so parsers meet both forms."""
    root, _ = make(tmp_path, num_images=8)
    objects = [o for record in load(root, "objects.json") for o in record["objects"]]
    with_synsets = ["synsets" in o for o in objects]
    assert any(with_synsets) and not all(with_synsets)


def test_objects_are_distinct_and_phrases_unique(tmp_path):
    """No two objects of an image share (colour, shape); no two phrases match ignoring case."""
    root, _ = make(tmp_path, num_images=12, regions_per_image=40)
    objects = load(root, "objects.json")
    for record, region_record in zip(objects, load(root, "region_descriptions.json")):
        count = len(record["objects"])
        assert 3 <= count <= 6
        phrases = [r["phrase"] for r in region_record["regions"]]
        named = [phrase_words(p) for p in phrases[:count]]
        assert len(set(named)) == count
        assert [shape for _, shape in named] == [o["names"][0] for o in record["objects"]]
        assert len({p.lower() for p in phrases}) == len(phrases)


def test_object_boxes_are_tight_and_show_their_object(tmp_path):
    """Object regions equal the objects' boxes, lie in the image, and their centre shows the
    phrase's colour (nearest among the image's objects), so focus on the box identifies it."""
    root, _ = make(tmp_path, num_images=12)
    images = load(root, "image_data.json")
    objects = load(root, "objects.json")
    regions = load(root, "region_descriptions.json")
    for image, object_record, region_record in zip(images, objects, regions):
        pixels = np.asarray(Image.open(synth.image_path(root, image["image_id"])), np.float32)
        assert pixels.shape[:2] == (image["height"], image["width"])
        count = len(object_record["objects"])
        colours = [phrase_words(r["phrase"])[0] for r in region_record["regions"][:count]]
        palette = np.array([synth.COLOURS[c] for c in colours], np.float32)
        for obj, region, colour in zip(object_record["objects"], region_record["regions"], colours):
            x, y, w, h = region["x"], region["y"], region["width"], region["height"]
            assert (obj["x"], obj["y"], obj["w"], obj["h"]) == (x, y, w, h)
            assert 0 <= x and 0 <= y and x + w <= image["width"] and y + h <= image["height"]
            centre = pixels[y + h // 2 - 1:y + h // 2 + 2, x + w // 2 - 1:x + w // 2 + 2]
            mean = centre.reshape(-1, 3).mean(axis=0)
            nearest = colours[int(np.argmin(((palette - mean) ** 2).sum(axis=1)))]
            assert nearest == colour, (image["image_id"], region["phrase"], mean)


def test_extra_regions_fill_up_and_spread_in_size(tmp_path):
    """regions_per_image pads each image to that many regions, none under the minimum side,
    with relational, part and background phrases and sizes from tiny to most of the image."""
    root, report = make(tmp_path, num_images=6, regions_per_image=50)
    sides = []
    phrases = []
    records = zip(load(root, "image_data.json"), load(root, "region_descriptions.json"))
    for image, record in records:
        short = min(image["width"], image["height"])
        assert len(record["regions"]) == 50
        for region in record["regions"]:
            assert min(region["width"], region["height"]) >= synth.min_region_side(short)
            sides.append(max(region["width"], region["height"]) / short)
            phrases.append(region["phrase"])
    assert report.regions_written == 6 * 50 == report.expected_regions_kept
    assert min(sides) < 0.15 and max(sides) > 0.8
    assert any(" half of the " in p for p in phrases)
    assert any(" patch of " in p for p in phrases)
    assert any(re.search(r" (left of|right of|above|below|next to) the ", p) for p in phrases)


def test_image_quirks_are_on_disk_as_reported(quirky):
    """Each image quirk is really on disk: the missing file is absent, the truncated JPEG fails
    to load, the garbage is no image, and grey, CMYK, PNG, palette and wrong sizes are as said."""
    root, report = quirky
    found = Counter()
    for image in load(root, "image_data.json"):
        image_id = image["image_id"]
        path = synth.image_path(root, image_id)
        if image_id in reasons.KNOWN_CORRUPT_IMAGE_IDS:
            found[reasons.SKIP_KNOWN_CORRUPT] += 1
            Image.open(path).load()  # a valid file, skipped by id alone
            continue
        if not path.exists():
            found[reasons.SKIP_MISSING] += 1
            continue
        try:
            opened = Image.open(path)
        except UnidentifiedImageError:
            found[reasons.SKIP_UNDECODABLE] += 1
            continue
        try:
            opened.load()
        except OSError:
            found[reasons.SKIP_TRUNCATED] += 1
            continue
        if opened.format == "PNG":
            found[reasons.FIX_FORMAT_MISMATCH] += 1
        found[{"L": reasons.FIX_GRAYSCALE, "CMYK": reasons.FIX_CMYK, "P": reasons.FIX_PALETTE}
              .get(opened.mode, "rgb")] += 1
        if opened.size != (image["width"], image["height"]):
            found[reasons.FIX_SIZE_MISMATCH] += 1
    image_reasons = reasons.IMAGE_SKIPS + reasons.IMAGE_FIXES
    expected = {k: v for k, v in report.quirks.items() if k in image_reasons}
    expected.pop(reasons.SKIP_NO_REGIONS)  # a records quirk, checked with the regions
    del found["rgb"]
    assert dict(found) == expected
    assert expected[reasons.FIX_FORMAT_MISMATCH] == 2 and expected[reasons.FIX_PALETTE] == 1


def reference_filter(root: Path) -> tuple[Counter, int, int]:
    """The sharder's documented default rules, applied to the files: (counts, images, regions)."""
    images = {r["image_id"]: r for r in load(root, "image_data.json")}
    counts, kept_images, kept_regions = Counter(), 0, 0
    for record in load(root, "region_descriptions.json"):
        image_id = record["id"]
        if image_id not in images:
            counts[reasons.DROP_NO_IMAGE_RECORD] += len(record["regions"])
            continue
        path = synth.image_path(root, image_id)
        try:
            width, height = Image.open(path).size
            Image.open(path).load()
        except OSError:  # missing, undecodable or truncated: counted by the image test
            continue
        if image_id in reasons.KNOWN_CORRUPT_IMAGE_IDS:
            continue
        if not record["regions"]:
            counts[reasons.SKIP_NO_REGIONS] += 1
            continue
        scale = min(1.0, 256 / min(width, height))
        kept: list[tuple[str, tuple[int, int, int, int]]] = []  # phrase, (x0, y0, x1, y1)
        for region in record["regions"]:
            fields = [region.get(k) for k in ("x", "y", "width", "height")]
            if not isinstance(region.get("phrase"), str) or not all(
                isinstance(v, int) for v in fields
            ):
                counts[reasons.DROP_BAD_RECORD] += 1
                continue
            phrase = " ".join(region["phrase"].split())
            x, y, w, h = fields
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
            if not phrase:
                counts[reasons.DROP_EMPTY_PHRASE] += 1
            elif w <= 0 or h <= 0:
                counts[reasons.DROP_EMPTY_BOX] += 1
            elif x1 <= x0 or y1 <= y0:
                counts[reasons.DROP_OUTSIDE_IMAGE] += 1
            elif min(x1 - x0, y1 - y0) * scale < 4:
                counts[reasons.DROP_TOO_SMALL] += 1
            elif any(p.lower() == phrase.lower() and iou(b, (x0, y0, x1, y1)) > 0.7
                     for p, b in kept):
                counts[reasons.DROP_DUPLICATE] += 1
            else:
                kept.append((phrase, (x0, y0, x1, y1)))
                counts[reasons.FIX_WHITESPACE] += phrase != region["phrase"]
                counts[reasons.FIX_CLIPPED] += (x0, y0, x1, y1) != (x, y, x + w, y + h)
                counts[reasons.FIX_LONG_PHRASE] += len(phrase) > 200
        kept_images += 1
        kept_regions += len(kept)
    return +counts, kept_images, kept_regions


def iou(a, b) -> float:
    """IoU of two (x0, y0, x1, y1) boxes."""
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter)


def test_region_quirks_trigger_under_the_sharder_defaults(quirky):
    """Applying the sharder's default rules to the files gives exactly the reported region
    counts and kept totals, so shard tests can assert the report's numbers."""
    root, report = quirky
    counts, kept_images, kept_regions = reference_filter(root)
    region_reasons = reasons.REGION_DROPS + reasons.REGION_FIXES + (reasons.SKIP_NO_REGIONS,)
    assert dict(counts) == {k: v for k, v in report.quirks.items() if k in region_reasons}
    assert kept_images == report.expected_images_kept
    assert kept_regions == report.expected_regions_kept
    assert report.quirks[reasons.FIX_WHITESPACE] == 3
    assert report.quirks[reasons.DROP_EMPTY_BOX] == report.quirks[reasons.DROP_BAD_RECORD] == 2


def test_quirk_report_lists_big_ids_and_the_corrupt_id(quirky):
    """The two >32-bit region ids are in the file and the report; id 1592 is listed once."""
    root, report = quirky
    records = load(root, "region_descriptions.json")
    region_ids = [r["region_id"] for record in records for r in record["regions"]]
    assert sorted(i for i in region_ids if i >= 2**32) == report.big_region_ids
    assert report.big_region_ids == list(synth.BIG_REGION_IDS)
    assert len(region_ids) == len(set(region_ids)) == report.regions_written
    image_ids = [r["image_id"] for r in load(root, "image_data.json")]
    assert len(image_ids) == report.images_written == 40
    assert [i for i in image_ids if i in reasons.KNOWN_CORRUPT_IMAGE_IDS] == [1592]


def test_clean_ids_skip_the_known_corrupt_ones():
    """Without quirks no listed id is one the sharder skips by default, however many images."""
    ids = synth._image_ids(SynthOptions(num_images=4620))
    assert len(ids) == 4620 and not set(ids) & set(reasons.KNOWN_CORRUPT_IMAGE_IDS)


def test_a_stale_file_cannot_hide_the_missing_image(tmp_path):
    """Regenerating over an old output removes the file the `missing` quirk must not have."""
    root, _ = make(tmp_path, num_images=30)
    before = set(all_files(root))
    make(tmp_path, num_images=30, quirks=True)
    missing = [
        i["image_id"] for i in load(root, "image_data.json")
        if not synth.image_path(root, i["image_id"]).exists()
    ]
    assert len(missing) == 1 and str(synth.image_path(root, missing[0]).relative_to(root)) in before


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"num_images": 0}, "number of images"),
        ({"version": "2.0"}, "version"),
        ({"num_images": 10, "quirks": True}, "at least 30"),
        ({"regions_per_image": -1}, "regions_per_image"),
        ({"workers": -1}, "workers"),
        ({"seed": -1}, "seed"),
        ({"long_side_px": (200, 150)}, "long_side_px"),
        ({"long_side_px": (64, 96)}, "long_side_px"),
    ],
)
def test_bad_options_are_user_errors(fields, message):
    """Each invalid option is refused up front with a one-line message naming it."""
    with pytest.raises(UserError, match=message):
        SynthOptions(**fields)


def test_output_path_that_is_a_file_is_a_user_error(tmp_path):
    """--out pointing at a file is refused before anything is written."""
    target = tmp_path / "file.json"
    target.write_text("[]")
    with pytest.raises(UserError, match="not a directory"):
        generate_vg(target, SynthOptions(num_images=1, long_side_px=SMALL))


def test_an_interrupted_run_leaves_no_report_and_no_temporaries(tmp_path):
    """A run stopped midway removes its temporary files and the old report, whose presence
    would otherwise mark the half-rewritten folder as a finished dataset."""
    root, _ = make(tmp_path, num_images=3)

    def interrupt(_images: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_vg(root, SynthOptions(num_images=3, seed=1, long_side_px=SMALL), interrupt)
    assert not (root / synth.REPORT_FILE).exists()
    assert not list(root.rglob("*.tmp*"))


def test_progress_is_told_of_every_image(tmp_path):
    """The progress callback receives increments that sum to the number of images."""
    seen = []
    generate_vg(tmp_path / "p", SynthOptions(num_images=4, long_side_px=SMALL), seen.append)
    assert sum(seen) == 4
