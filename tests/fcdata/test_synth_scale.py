import json

from fcdata import vg
from fcdata.synth_scale import ScaleOptions, generate_vg_scale


def test_vg_scale_files_are_vg_json_with_the_stated_counts(tmp_path):
    """The three files are valid JSON in VG 1.4's layout, hold the counts the report states,
    and parse through fcdata.vg; only the first image_files images have a JPEG, at the stated size."""
    from PIL import Image

    report = generate_vg_scale(tmp_path, ScaleOptions(num_images=2100, image_files=3, seed=1))
    regions = json.loads((tmp_path / "region_descriptions.json").read_text())
    objects = json.loads((tmp_path / "objects.json").read_text())
    images = json.loads((tmp_path / "image_data.json").read_text())
    assert report["counts"] == {
        "images": len(images),
        "regions": sum(len(r["regions"]) for r in regions),
        "objects": sum(len(o["objects"]) for o in objects),
    }
    assert 45 < report["counts"]["regions"] / 2100 < 55 and 30 < report["counts"]["objects"] / 2100 < 40
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
    for file in ("image_data.json", "region_descriptions.json", "objects.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
