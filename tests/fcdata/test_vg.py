import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from fcdata import reasons, vg
from fcdata.errors import UserError


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


ELEMENTS = [{"a": [1, 2, "]"]}, 123456789012, -1.5e3, "x, \\\"y", True, None, [], {"é": "ü,}"}]


@pytest.mark.parametrize("chunks", [1, 3, 100])
def test_json_array_is_split_and_decoded_in_order(tmp_path, monkeypatch, chunks):
    """Elements of every kind (brackets and commas inside strings, escapes, unicode) come back
    intact and in order, however the array is cut into chunks."""
    monkeypatch.setattr(vg, "_CHUNKS_PER_WORKER", chunks)
    path = write(tmp_path / "a.json", "\ufeff [ " + " ,\n ".join(json.dumps(e, ensure_ascii=False) for e in ELEMENTS) + " ] \n")
    data = np.fromfile(path, np.uint8)
    spans, error, _ = vg.json_array_elements(data)
    assert error == 0
    assert [json.loads(data[a:b].tobytes()) for a, b in spans] == ELEMENTS
    pieces = vg._chunks(spans, chunks)
    assert 1 <= len(pieces) <= chunks
    decoded = [e for a, b in pieces for e in json.loads(b"[" + data[a:b].tobytes() + b"]")]
    assert decoded == ELEMENTS


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "expected a JSON array"),
        ("{}", "expected a JSON array"),
        ('[{"a": 1}', "not closed"),
        ('[{"a": "1]}', "not closed"),
        ("[1,,2]", "empty element"),
        ("[1,]", "empty element"),
        ("[1] 2", "after the JSON array"),
        ("[1}]", "unbalanced"),
        ('[{"a": 1} {"b": 2}]', "invalid JSON"),
        ('[{"a": }]', "invalid JSON"),
    ],
)
def test_broken_json_is_a_one_line_user_error(tmp_path, text, message):
    """Truncated or malformed annotation files raise UserError naming the file and the problem."""
    path = write(tmp_path / "bad.json", text)
    with pytest.raises(UserError, match=f"bad.json.*{message}"):
        vg.read_annotation(path, "regions")


def test_empty_array_gives_an_empty_table(tmp_path):
    """`[]` is a valid (if useless) annotation file."""
    table, drops = vg.read_annotation(write(tmp_path / "e.json", " [ ] "), "regions")
    assert table.num_rows == 0 and not drops


def make_root(tmp_path, images, regions, objects=None):
    tmp_path.mkdir(exist_ok=True)
    write(tmp_path / "image_data.json", json.dumps(images))
    write(tmp_path / "region_descriptions.json", json.dumps(regions))
    if objects is not None:
        write(tmp_path / "objects.json", json.dumps(objects))
    return tmp_path


def test_v10_and_v12_field_names_give_the_same_tables(tmp_path):
    """v1.0 (`id`, `image`) and v1.2 (`image_id`, `region_id`) region fields map to one schema."""
    big_id = 900100184613
    v12 = make_root(
        tmp_path / "v12",
        [{"image_id": 5, "width": 800, "height": 600, "url": "u"}],
        [{"id": 5, "regions": [{"region_id": big_id, "image_id": 5, "phrase": "a cat", "x": 1, "y": 2, "width": 3, "height": 4}]}],
        [{"image_id": 5, "objects": [{"object_id": 9, "x": 1, "y": 2, "w": 3, "h": 4, "names": ["cat"], "synsets": ["cat.n.01"]}]}],
    )
    v10 = make_root(
        tmp_path / "v10",
        [{"id": 5, "width": 800, "height": 600, "image_url": "u"}],
        [{"id": 5, "regions": [{"id": big_id, "image": 5, "phrase": "a cat", "x": 1, "y": 2, "width": 3, "height": 4}]}],
        [{"id": 5, "objects": [{"id": 9, "x": 1, "y": 2, "w": 3, "h": 4, "name": "cat"}]}],
    )
    a, b = vg.load_vg(v12), vg.load_vg(v10)
    assert a.images.to_pylist() == b.images.to_pylist() == [{"image_id": 5, "stated_width": 800, "stated_height": 600, "coco_id": None}]
    assert a.regions.to_pylist() == b.regions.to_pylist()
    assert a.regions.column("region_id").to_pylist() == [big_id]
    assert a.objects.column("names").to_pylist() == b.objects.column("names").to_pylist() == [["cat"]]
    assert b.objects.column("synsets").to_pylist() == [[]]


def test_bad_region_records_are_counted_not_fatal(tmp_path):
    """Missing phrase, non-numeric coordinates and unknown images are counted drops."""
    root = make_root(
        tmp_path,
        [{"image_id": 1, "width": 10, "height": 10}],
        [
            {"id": 1, "regions": [
                {"region_id": 1, "image_id": 1, "phrase": "ok", "x": 0, "y": 0, "width": 5, "height": 5},
                {"region_id": 2, "image_id": 1, "x": 0, "y": 0, "width": 5, "height": 5},
                {"region_id": 3, "image_id": 1, "phrase": "p", "x": "abc", "y": 0, "width": 5, "height": 5},
                {"region_id": 4, "image_id": 1, "phrase": "p", "x": True, "y": 0, "width": 5, "height": 5},
            ]},
            {"id": 77, "regions": [{"region_id": 5, "image_id": 77, "phrase": "p", "x": 0, "y": 0, "width": 5, "height": 5}]},
            "not a record",
        ],
    )
    annotations = vg.load_vg(root)
    assert annotations.regions.column("region_id").to_pylist() == [1]
    assert annotations.region_drops == {reasons.DROP_BAD_RECORD: 3, reasons.DROP_NO_IMAGE_RECORD: 1}
    assert annotations.objects is None


def test_missing_root_or_annotation_is_a_user_error(tmp_path):
    """A wrong --vg-root or a missing region_descriptions.json is one clear error."""
    with pytest.raises(UserError, match="not a directory"):
        vg.load_vg(tmp_path / "nope")
    write(tmp_path / "image_data.json", "[]")
    with pytest.raises(UserError, match="region_descriptions.json not found"):
        vg.load_vg(tmp_path)


def test_annotations_are_found_one_folder_down(tmp_path):
    """Releases unpacked into a version folder (e.g. 1.2/) are found from the root."""
    (tmp_path / "1.2").mkdir()
    write(tmp_path / "1.2" / "region_descriptions.json", "[]")
    assert vg.find_annotation(tmp_path, "region_descriptions") == tmp_path / "1.2" / "region_descriptions.json"


def test_image_index_looks_in_all_vg_folders(tmp_path):
    """Images are found in VG_100K/, VG_100K_2/ and images/ whatever the URL says; non-images are ignored."""
    for folder, name in (("VG_100K", "1.jpg"), ("VG_100K_2", "2.jpg"), ("images", "3.JPG"), ("images", "notes.txt")):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / name).write_bytes(b"x")
    found = vg.index_image_files(tmp_path)
    assert sorted(found) == [1, 2, 3]
    assert found[2].parent.name == "VG_100K_2"


def test_parallel_parse_equals_serial(tmp_path, monkeypatch):
    """Decoding chunks in worker processes gives exactly the tables of the one-process path."""
    regions = [
        {"id": i, "regions": [{"region_id": i * 10 + k, "image_id": i, "phrase": f"p{k}", "x": k, "y": 1, "width": 5, "height": 5} for k in range(3)]}
        for i in range(1, 60)
    ]
    root = make_root(tmp_path, [{"image_id": i, "width": 9, "height": 9} for i in range(1, 50)], regions)
    serial = vg.load_vg(root)
    monkeypatch.setattr(vg, "_PARALLEL_MIN_BYTES", 0)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        parallel = vg.load_vg(root, pool, workers=2)
    assert parallel.regions.equals(serial.regions) and parallel.images.equals(serial.images)
    assert parallel.region_drops == serial.region_drops == {"no_image_record": 30}
